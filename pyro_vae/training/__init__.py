"""Training, in the order a run goes through it:

config, schedule          TrainConfig (every setting declared once) and its schedules
inputs                    the device, the data and the memory a step needs
objective, optimizer      make_objective: estimator -> ELBOLoss -> compiled -> DDP, and the optimizer
build, restore, run       build_run: a live Run (new, or restored from its checkpoint)
step, epoch               svi_step, the one SVI step; an epoch of steps on this rank's share
signals, loop             Ctrl-C and SIGTERM between two steps; train() and resume()
checkpoint/, report/      the checkpoint file and what it holds; the run folder, records, figures
trained_run, fits         a run folder back in Python; the small fits of ground-truth checks
"""
