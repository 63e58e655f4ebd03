"""cellgen.flow: Sobel gradients, Horn–Schunck flow, dense warping, flow integration, losses and rendering.

Never imports Lightning. Flow fields are (B, 2, H, W) in pixels, channel 0 = x (rightward), 1 = y (downward).
"""

from cellgen.flow.gradients import sobel_gradients
from cellgen.flow.horn_schunck import horn_schunck, horn_schunck_numpy
from cellgen.flow.losses import flow_smoothness_loss
from cellgen.flow.visualise import flow_to_color
from cellgen.flow.warp import integrate_velocity, warp_by_flow

__all__ = [
    "flow_smoothness_loss",
    "flow_to_color",
    "horn_schunck",
    "horn_schunck_numpy",
    "integrate_velocity",
    "sobel_gradients",
    "warp_by_flow",
]
