"""Files in and out: safe reads and atomic writes, input images, output images and their names,
the inputs of a run and the state of a folder run. Light except :mod:`.read` / :mod:`.write`
(Pillow, numpy): no torch."""
