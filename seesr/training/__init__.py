"""Fine-tuning SeeSR: ``seesr train HR_DIR -o OUT`` / :func:`seesr.train`.

``degradation`` makes LR images (Real-ESRGAN second-order model), ``data`` turns a folder into
samples, ``loop`` trains on accelerate, ``settings`` declares the options once.
"""
