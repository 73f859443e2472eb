"""Model backends: the `ModelBackend` interface (base.py), Hugging Face (hf.py), Python plug-ins (python_file.py);
loading.py picks one from the job's `model` parameters."""
