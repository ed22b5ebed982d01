"""tabfleetd: a daemon that turns batches of prompts into images through real browsers."""

__version__ = "0.1.0"
