"""In-process subcommands of the ``imagesieve`` CLI (each: add_arguments, run)."""
