"""Result figures of the paper's analyses (Figs. 4-7) and of training, in the workflow's one style.

Each figure function saves PNG + PDF through ``workflow.plots.save_figure`` and returns the numbers
it shows. Empty input raises ``FigureInputError`` naming what is missing, rather than leaving a
blank or misleading figure in the results.
"""


class FigureInputError(ValueError):
    """A figure's input is empty or inconsistent, so the figure would show nothing meaningful."""
