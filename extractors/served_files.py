"""Names of the files beside a served model in the Triton repository: the contract between export (which puts them
there) and the gateway (which reads them). A module of its own so the gateway imports no torch for a file name."""

# A model's score calibration (format: server/calibration.py), fitted by `vsearch calibrate` into weights/<model>/.
CALIBRATION_FILE = "calibration.json"
# What a served model is, for people choosing one (format: export.repository.model_info): description, what it was
# trained on, its domain. The gateway reports it in ListModels.
MODEL_INFO_FILE = "model_info.json"
