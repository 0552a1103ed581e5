"""What a trained model is worth: negative ELBO and importance-sampled log p(x) (`likelihood`), the
importance weights' diagnostics, the exact 2-D posterior, samples and figures."""
