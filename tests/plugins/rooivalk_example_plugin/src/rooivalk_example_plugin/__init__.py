"""An example rooivalk plugin: the `example_mlp_cnn` model family and the `example_csv_images` reader.

rooivalk imports these modules through the entry points in pyproject.toml the first time a plan or
`rooivalk families` asks for them; importing this package alone registers nothing.
"""

__version__ = "0.1.0"
