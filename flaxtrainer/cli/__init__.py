"""The command line: flags -> config, the job's flow, demo and predict. Nothing in the library imports it."""
