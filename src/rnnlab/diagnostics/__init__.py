"""See the gradients: how far back BPTT's gradient reaches, and why.

    from rnnlab import RNN, diagnostics as dg
    rnn = RNN(4, 32, dtype=np.float64, rng=0)
    prof = dg.gradient_by_lag(rnn, x)            # ‖∂L/∂h_k‖ against the lag, exact
    print(prof.verdict())   # l0: ‖∂L/∂h_k‖ falls by a factor of 10 every 6.8 steps (…): vanishing
    dg.plot_lag_profile(prof, "lag.png")         # needs rnnlab[plot]

Every analysis returns a plain dataclass with `to_json()` (a JSON-able dict) and `verdict()`
(the finding in words). Analyses on a layer: `gradient_by_lag`, `gradient_map`,
`jacobian_products` (with `step_jacobians`), `gate_saturation`, `recurrent_spectrum`.
Elsewhere: `spectrum_over_checkpoints` (training history), `loss_slice` and
`clipped_vs_unclipped_step` (cliffs and clipping), `iterated_map` (fixed points and basins
of a 1- or 2-unit RNN). The `plot_*` functions write PNGs of the results. The analyses of a
layer run in float64 whatever its dtype, so gradients that vanish over long lags keep their
digits (float32 would sink into subnormal numbers below 1e-38).
"""

from rnnlab.diagnostics._common import RateFit, fit_rate
from rnnlab.diagnostics.dynamics import IteratedMap, iterated_map
from rnnlab.diagnostics.gates import GateSaturation, gate_saturation
from rnnlab.diagnostics.jacobians import JacobianProfile, jacobian_products, step_jacobians
from rnnlab.diagnostics.lags import GradientMap, LagProfile, gradient_by_lag, gradient_map
from rnnlab.diagnostics.landscape import (
    ClipComparison,
    LossSlice,
    clipped_vs_unclipped_step,
    loss_slice,
)
from rnnlab.diagnostics.plots import (
    PlotDependencyError,
    plot_gate_saturation,
    plot_gradient_map,
    plot_iterated_map,
    plot_jacobian_bound,
    plot_lag_profile,
    plot_loss_slice,
    plot_spectrum,
)
from rnnlab.diagnostics.spectrum import (
    Spectrum,
    SpectrumBlock,
    SpectrumHistory,
    recurrent_spectrum,
    spectrum_over_checkpoints,
)

__all__ = [
    "ClipComparison",
    "GateSaturation",
    "GradientMap",
    "IteratedMap",
    "JacobianProfile",
    "LagProfile",
    "LossSlice",
    "PlotDependencyError",
    "RateFit",
    "Spectrum",
    "SpectrumBlock",
    "SpectrumHistory",
    "clipped_vs_unclipped_step",
    "fit_rate",
    "gate_saturation",
    "gradient_by_lag",
    "gradient_map",
    "iterated_map",
    "jacobian_products",
    "loss_slice",
    "plot_gate_saturation",
    "plot_gradient_map",
    "plot_iterated_map",
    "plot_jacobian_bound",
    "plot_lag_profile",
    "plot_loss_slice",
    "plot_spectrum",
    "recurrent_spectrum",
    "spectrum_over_checkpoints",
    "step_jacobians",
]
