"""pixelmill's doors: the `pixelmill` command (cli/), the Python and HTTP APIs (api/) and the intake queue
(intake.py). The shared contract is in contract/, the submit and GPU sides in producer/ and worker/."""
