"""matplotlib backend of the sandbox (``MPLBACKEND=module://agents_backend``):
Agg rendering, and ``plt.show()`` hands each open figure to the kernel as a
PNG (returned as an image output) instead of opening a window."""

from __future__ import annotations

import io
import sys
from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas

__all__ = ["FigureCanvas", "show"]


def show(*args: Any, **kwargs: Any) -> None:
    kernel = sys.modules.get("agents_kernel")
    for manager in Gcf.get_all_fig_managers():
        buf = io.BytesIO()
        manager.canvas.figure.savefig(buf, format="png", bbox_inches="tight")
        if kernel is not None:
            kernel.shown_images.append(buf.getvalue())
    Gcf.destroy_all()
