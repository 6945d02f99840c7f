"""What a run leaves in output_dir: the folder policy, results files, trainer_state.json."""
