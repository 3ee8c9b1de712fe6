"""The engines that upscale an image (SeeSR, Real-ESRGAN), the shape they share, and the
out-of-memory ladder that steps through their rungs."""
