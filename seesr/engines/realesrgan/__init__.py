"""The Real-ESRGAN engine: bundled models converted from ncnn, model files spandrel loads, tiles."""
