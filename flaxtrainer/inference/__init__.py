"""Raw-text inference with a fine-tuned model (the library's; the command line calls it)."""
