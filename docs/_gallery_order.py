"""Order of the gallery's examples (sphinx-gallery's ``within_subsection_order``).

A reader meets the quickstart first, then raw GPS to predictions, explainability and model
selection; any other example follows, by file name.
"""

#: File-name prefixes, in the order the gallery shows them.
ORDER = ("plot_few_shot_transfer", "plot_raw_gps", "plot_explainability", "plot_model_selection")


class ExampleOrder:
    """Sort key of example file names: position in :data:`ORDER`, then the name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        rank = next((i for i, prefix in enumerate(ORDER) if filename.startswith(prefix)), len(ORDER))
        return rank, filename
