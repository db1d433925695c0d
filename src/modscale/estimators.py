"""scikit-learn estimators over the modular network and the kernel learning rule (PAPER.md claim 3).

The paper's method as an estimator: standardise X, find each module's projection with the kernel learning
rule (:func:`modscale.rules.kernel_projections`, ``projection_init="kernel"``) or draw it at random
(``"random"``), then train every parameter of a :class:`modscale.models.ModularNet`

    f(x) = (1 / sqrt(K)) sum_{i=1..K} f_i(U_i x),   f_i a ReLU MLP (width, depth) on R^b,

plus an optional linear term w^T x (``linear_term``, on by default; the two together are a
:class:`modscale.models.AdditiveIndexNet`), with Adam
(:func:`modscale.training.train`, weight decay ``alpha``, early stopping on by default) on the mean
squared error of the standardised targets (:class:`ModularRegressor`) or the cross-entropy of the class
logits (:class:`ModularClassifier`).
``transform`` returns each module's input U_i x (of the standardised x), (n, K b).

Randomness: ``random_state`` (an int, a numpy RandomState, or None meaning seed 0: as everywhere in
modscale, no global random state is used) seeds the network's initial weights, the rule and the
minibatches, so a refit with the same ``random_state`` gives the same model on the CPU. Predictions are
computed in float64 (the network trains in float32), so they do not depend on how rows are batched.

Example::

    from modscale.estimators import ModularRegressor
    est = ModularRegressor(random_state=0).fit(X_train, y_train)   # n_modules="auto"
    est.score(X_test, y_test)          # R^2
    est.transform(X_test).shape        # (n_test, est.n_modules_): what each module sees
    est.modules_[0]["top_features"]    # the features module 0 weighs most
"""

from __future__ import annotations

import numbers
from functools import partial
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from modscale._checks import check_int
from modscale.errors import InvalidParameter, InvalidType, InvalidValue
from modscale.models import AdditiveIndexNet, ModularNet
from modscale.rules import STRATEGIES, choose_n_modules, kernel_projections
from modscale.rules.kernels import KERNELS, ntk
from modscale.training import train

PROJECTION_INITS = ("kernel", "random")
"""``projection_init``'s choices: the kernel learning rule, or random projections."""
_RIDGE_ALPHAS = np.logspace(-3, 3, 13)  # the linear term's ridge, chosen by leave-one-out (closed form)


def _seed(random_state) -> int:
    """An int seed from ``random_state``: an int >= 0, a numpy RandomState / Generator, or None (seed 0)."""
    if random_state is None:
        return 0
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise InvalidValue(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    raise InvalidType(f"random_state must be None, an int or a numpy RandomState, got {random_state!r}")


def _module_fn(layers, z: torch.Tensor) -> torch.Tensor:
    """One module MLP of a ModularNet as a pure function of its weights [(W (fan_in, fan_out), c), ...]."""
    h = z
    for i, (W, c) in enumerate(layers):
        h = h @ W + c
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def _module_tangent_kernel(net: ModularNet):
    """The tangent kernel of the network's first module at its current (initial) weights: the reviewers'
    reading of the paper's rule (PAPER.md claim 3), k(z, z') = <d f_1(z)/d theta, d f_1(z')/d theta>."""
    layers = [
        (W[0, 0].detach().clone(), c[0, 0].detach().clone())
        for W, c in zip(net.weights, net.biases, strict=True)
    ]
    return partial(ntk, fn=_module_fn, params=layers)


def _ridge_loo(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge regression of Y (n, c) on centred X (n, m) with its penalty chosen by leave-one-out error.

    With X = U S V^T, the fit for penalty a is W_a = V diag(s / (s^2 + a)) U^T Y and its leave-one-out
    residuals are (Y - H_a Y) / (1 - diag H_a), H_a = U diag(s^2 / (s^2 + a)) U^T (Allen 1974): one SVD
    for all penalties in ``_RIDGE_ALPHAS`` (relative to n, as the data are standardised). Returns (W (m, c),
    the chosen penalty)."""
    n = X.shape[0]
    Uf, sv, Vt = np.linalg.svd(X, full_matrices=False)  # (n, r), (r,), (r, m)
    UtY = Uf.T @ Y  # (r, c)
    best, choice = np.inf, None
    for a in _RIDGE_ALPHAS * n:
        shrink = sv**2 / (sv**2 + a)  # (r,)
        fitted = Uf @ (shrink[:, None] * UtY)  # (n, c)
        h = (Uf**2) @ shrink  # (n,) diag of the hat matrix
        loo = ((Y - fitted) / np.clip(1 - h, 1e-12, None)[:, None]) ** 2
        if loo.mean() < best:
            best, choice = loo.mean(), a
    W = Vt.T @ ((sv / (sv**2 + choice))[:, None] * UtY)  # (m, c)
    return W, float(choice / n)


class _ModularEstimator(TransformerMixin, BaseEstimator):
    """Shared parameters, validation and the private solver of the two estimators."""

    def __init__(
        self,
        n_modules: int | str = "auto",
        module_dim: int = 1,
        projection_init: str = "kernel",
        kernel: str = "rbf",
        strategy: str = "deflation",
        width: int = 32,
        depth: int = 2,
        linear_term: bool = True,
        alpha: float = 1e-4,
        max_steps: int = 3000,
        lr: float = 3e-3,
        batch_size: int = 128,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        patience: int = 1000,
        max_modules: int = 8,
        spare_modules: int = 1,
        kernel_steps: int = 50,
        kernel_batch_size: int | str = "auto",
        kernel_passes: int = 1,
        device: str = "auto",
        random_state=None,
    ):
        self.n_modules = n_modules
        self.module_dim = module_dim
        self.projection_init = projection_init
        self.kernel = kernel
        self.strategy = strategy
        self.width = width
        self.depth = depth
        self.linear_term = linear_term
        self.alpha = alpha
        self.max_steps = max_steps
        self.lr = lr
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_modules = max_modules
        self.spare_modules = spare_modules
        self.kernel_steps = kernel_steps
        self.kernel_batch_size = kernel_batch_size
        self.kernel_passes = kernel_passes
        self.device = device
        self.random_state = random_state

    # validation ---------------------------------------------------------------------------------------------
    _parameter_constraints: dict = {
        "n_modules": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "module_dim": [Interval(Integral, 1, None, closed="left")],
        "projection_init": [StrOptions(set(PROJECTION_INITS))],
        "kernel": [StrOptions(set(KERNELS))],
        "strategy": [StrOptions(set(STRATEGIES))],
        "width": [Interval(Integral, 1, None, closed="left")],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "linear_term": ["boolean"],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_steps": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "max_modules": [Interval(Integral, 1, None, closed="left")],
        "spare_modules": [Interval(Integral, 0, None, closed="left")],
        "kernel_steps": [Interval(Integral, 1, None, closed="left")],
        "kernel_batch_size": [StrOptions({"auto"}), Interval(Integral, 2, None, closed="left")],
        "kernel_passes": [Interval(Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state", np.random.Generator],
    }

    def _check_params(self, n_features: int) -> None:
        """scikit-learn's parameter validation (``_parameter_constraints``; its error is a ValueError and a
        TypeError, raised here as modscale's :class:`~modscale.errors.InvalidParameter`), plus what it
        cannot say: no bool where a number is meant, and the modules' directions fit in the input."""
        try:
            self._validate_params()
        except InvalidParameterError as err:
            raise InvalidParameter(str(err)) from None
        for name, rules in self._parameter_constraints.items():
            value = getattr(self, name)
            if isinstance(value, bool | np.bool_) and "boolean" not in rules:
                raise InvalidParameter(
                    f"The {name!r} parameter of {type(self).__name__} must be a number, not a bool; "
                    f"got {value!r} instead."
                )
        b = int(self.module_dim)
        if b > n_features:
            raise InvalidValue(f"module_dim must be <= the number of features ({n_features}), got {b}")
        if self.n_modules != "auto" and int(self.n_modules) * b > n_features:
            K = int(self.n_modules)
            raise InvalidValue(
                f"n_modules * module_dim must be <= the number of features ({n_features}): the modules "
                f"read {K * b} directions of a {n_features}-dimensional input; got n_modules = {K}, "
                f"module_dim = {b}"
            )

    def _validate_X(self, X, y="no_validation", reset: bool = False):
        try:
            if isinstance(y, str) and y == "no_validation":  # predict/transform: X only
                return validate_data(self, X, reset=reset, dtype=np.float64)
            return validate_data(
                self, X, y, reset=reset, dtype=np.float64, multi_output=True, y_numeric=False
            )
        except ValueError as err:  # one error type for bad input across modscale (a ValueError still)
            raise InvalidValue(str(err)) from err

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return torch.tensor((X - self.x_mean_) / self.x_scale_, dtype=torch.float64)

    def _rule_batch(self, n_rows: int) -> int:
        """The rule's minibatch: ``kernel_batch_size``, or "auto": n / 4 rows capped at 256 (below)."""
        if self.kernel_batch_size == "auto":
            return max(2, min(256, n_rows // 4))
        return max(2, min(int(self.kernel_batch_size), n_rows))

    # the private solver -------------------------------------------------------------------------------------
    def _fit_network(self, X: np.ndarray, T: torch.Tensor, rule_target: torch.Tensor, out_dim: int):
        """Standardise X, fit the linear term, choose K, find or draw the projections, train the network;
        sets the fitted attributes.

        T: training targets in the trainer's layout (n, q); rule_target: (n, c) float targets of the rule
        (and of the linear term's ridge start).
        """
        n, m = X.shape
        if n < 2:
            raise InvalidValue(f"n_samples = {n}: fitting needs at least 2 samples")
        self._check_params(m)
        seed = _seed(self.random_state)
        b = int(self.module_dim)
        self.x_mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        Xs = self._standardise(X).to(torch.float32)  # (n, m)

        # validation split for early stopping (a seeded permutation, numpy: no torch global state); with
        # fewer than 20 rows a tenth is 1 row, too few to stop on: all rows train, for max_steps
        perm = np.random.default_rng(seed + 3).permutation(n)
        stop = bool(self.early_stopping) and n >= 20
        n_val = min(max(int(round(self.validation_fraction * n)), 1), n - 2) if stop else 0
        fit_rows, val_rows = torch.as_tensor(perm[n_val:]), torch.as_tensor(perm[:n_val])
        n_fit = int(fit_rows.numel())

        # the linear term starts at the ridge fit of the targets (regression) or at logistic regression
        # (classes). The rule still reads y itself, not the ridge residual: on diabetes both gave R^2 0.418
        # (5 splits), and on the residual a module whose ridge function is nearly linear (tanh) can fall
        # below choose_n_modules' tolerance and go uncounted
        target = rule_target[fit_rows]  # (n_fit, c)
        W0, c0, self.linear_alpha_ = None, None, None
        if self.linear_term:
            W0, c0, self.linear_alpha_ = self._linear_start(Xs[fit_rows].double(), target.double(), out_dim)

        # the rule reads every row, the held-out ones too: they only choose the stopping step, and at
        # m = 50, n = 2000 the rule on 90 % of the rows missed a module on one split in three (R^2 0.74
        # against 0.99; docs/estimators.md, "Defaults, and the measurement behind each")
        K, U, self.module_selection_ = self._projections(Xs, rule_target, b, seed, out_dim)
        net = ModularNet(m, K, b, int(self.width), int(self.depth), out_dim=out_dim, generator=seed)
        if U is not None:
            U = U.cpu()  # a spare module beyond what the deflation found keeps its random start
            net.set_projections(torch.cat([U, net.projections[0][U.shape[0] :].to(U)]) if len(U) < K else U)
        self.initial_projections_ = net.projections[0].clone()  # (K, b, m)
        model = AdditiveIndexNet(net, W0)
        if c0 is not None:
            with torch.no_grad():
                model.c.copy_(c0.to(model.c).unsqueeze(0))

        batch = int(self.batch_size)
        B = batch if batch < n_fit else None
        val = (Xs[val_rows], T[val_rows]) if n_val else None
        # patience counts optimiser steps, not epochs: at n = 4000 ten epochs were 280 steps, which stopped
        # training before the modules aligned. The held-out loss is read about 10 times per patience
        # window (at most once an epoch), so the stop comes within a tenth of the window of the patience
        epoch = max(1, -(-n_fit // batch)) if B else 1  # steps per pass over the fitting rows
        steps, patience = int(self.max_steps), int(self.patience)
        every = max(1, min(epoch, patience // 10, steps))
        self.history_ = train(
            model, (Xs[fit_rows], T[fit_rows]), steps=steps, lr=float(self.lr), batch_size=B,
            loss=self._loss, device=self.device, generator=seed + 2, val=val, early_stopping=bool(n_val),
            patience=max(1, -(-patience // every)), eval_every=every, weight_decay=float(self.alpha),
        )  # fmt: skip
        # predictions in float64 on the CPU: independent of how rows are batched, and a model fitted on a
        # GPU predicts (and unpickles) on a machine without one
        self.model_ = model.cpu().double().eval()
        self.n_modules_ = K
        self.projections_ = self.model_.net.projections[0].float()  # (K, b, m), trained
        self._describe_modules(Xs[fit_rows].double())
        return self

    def _projections(self, X: torch.Tensor, target: torch.Tensor, b: int, seed: int, out_dim: int):
        """(K, U (K, b, m) or None for random starts, the evidence of choose_n_modules or None)."""
        n, m = X.shape
        options = dict(
            kernel=self.kernel if self.kernel != "ntk" else "rbf",
            steps=int(self.kernel_steps),
            progress=False,
        )
        K, evidence = self.n_modules, None
        if isinstance(K, str):  # "auto": held-out explained variance of the deflation (choose_n_modules)
            max_modules = max(1, min(int(self.max_modules), m // b))
            n_rule = n - max(1, int(round(0.2 * n)))
            K, evidence = choose_n_modules(
                X, target, max_modules, b, generator=seed + 1, device=self.device,
                batch_size=self._rule_batch(n_rule), **options,
            )  # fmt: skip
            evidence["spare_modules"] = min(int(self.spare_modules), m // b - K)
            K += evidence["spare_modules"]
        K = int(K)
        if self.projection_init == "random":
            return K, None, evidence
        if self.kernel == "ntk":  # the tangent kernel of the network's own first module at its start
            net = ModularNet(m, K, b, int(self.width), int(self.depth), out_dim=out_dim, generator=seed)
            options["kernel"] = _module_tangent_kernel(net)
        elif evidence is not None and self.strategy == "deflation":
            return K, evidence["projections"][:K], evidence  # found by the deflation that chose K
        U = kernel_projections(
            X, target, K, b, strategy=self.strategy, batch_size=self._rule_batch(n),
            passes=int(self.kernel_passes), generator=seed + 1, device=self.device, **options,
        )  # fmt: skip
        return K, U, evidence

    def _describe_modules(self, Xs: torch.Tensor) -> None:
        """Each module's share of the fitted function's variance on the fitting rows, and its input range."""
        with torch.no_grad():
            parts = self._module_outputs(Xs)  # (K + 1, n, out): modules, then the linear term
            Z = self.model_.net.module_inputs(Xs)[0].numpy()  # (K, n, b)
        var = parts.var(dim=1).sum(-1).numpy()  # (K + 1,)
        total = self._outputs_of(Xs).var(dim=0).sum().item()
        self.module_variance_ = var
        self.total_variance_ = max(total, 1e-300)
        self.module_input_quantiles_ = np.quantile(Z, np.linspace(0, 1, 101), axis=1)  # (101, K, b)
        edges = [np.histogram_bin_edges(Z[i, :, 0], bins=30) for i in range(Z.shape[0])]
        self.module_input_density_ = [
            (e, np.histogram(Z[i, :, 0], bins=e, density=True)[0]) for i, e in enumerate(edges)
        ]

    def _module_outputs(self, Xs: torch.Tensor) -> torch.Tensor:
        """Every module's contribution f_i(U_i x) / sqrt(K) to the output, and the linear term's, in the
        network's units: (K + 1, n, out)."""
        mods = self.model_.net.module_outputs(Xs)[0]  # (K, n, out)
        return torch.cat([mods, self.model_.linear(Xs).unsqueeze(0)])

    def _outputs_of(self, Xs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model_(Xs)

    def _outputs(self, X) -> torch.Tensor:
        """The network's outputs on validated X, (n, out_dim) float64 on the CPU."""
        check_is_fitted(self, "model_")
        X = self._validate_X(X)
        return self._outputs_of(self._standardise(X))

    def transform(self, X) -> np.ndarray:
        """Each module's input U_i x of the standardised x, concatenated: (n, n_modules * module_dim)."""
        check_is_fitted(self, "model_")
        X = self._validate_X(X)
        with torch.no_grad():
            Z = self.model_.net.module_inputs(self._standardise(X))[0]  # (K, n, b)
        return Z.permute(1, 0, 2).reshape(X.shape[0], -1).numpy()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of :meth:`transform`'s columns: ``module{i}_z{j}``, coordinate j of module i's input U_i x
        (so ``set_output(transform="pandas")`` labels them). ``input_features`` is checked against the
        features seen in fit."""
        check_is_fitted(self, "model_")
        _check_feature_names_in(self, input_features)
        K, b = self.projections_.shape[:2]
        return np.asarray([f"module{i}_z{j}" for i in range(K) for j in range(b)], dtype=object)

    # looking inside -----------------------------------------------------------------------------------------
    @property
    def modules_(self) -> list[dict]:
        """What each module learned: :meth:`describe_modules` with the fitted feature names."""
        return self.describe_modules()

    def describe_modules(self, feature_names=None) -> list[dict]:
        """What each module learned, one dict per module (and one for the linear term, ``"linear"``).

        ``feature_names``: names of the m features (default: those seen in fit, else x0, x1, ...).

        projection (b, m): U_i in the original feature units (module input z = projection @ x + offset,
        offset (b,)); weights (b, m): U_i on the standardised features (the effect of one standard
        deviation of each feature); top_features: the (up to 5) features with the largest |weights| as
        (name, weight); variance_share: Var f_i(U_i x) over the fitting rows as a fraction of the variance
        of the fitted function (shares need not add to 1 where modules correlate); output_scale: the
        factor from the network's units to the target's. Example: ``est.modules_[0]["top_features"]``.
        """
        check_is_fitted(self, "model_")
        names = getattr(self, "feature_names_in_", None) if feature_names is None else feature_names
        names = (
            [str(v) for v in names] if names is not None else [f"x{j}" for j in range(self.n_features_in_)]
        )
        if len(names) != self.n_features_in_:
            raise InvalidValue(f"feature_names must name {self.n_features_in_} features, got {len(names)}")
        U = self.projections_.double().numpy()  # (K, b, m)
        out = []
        for i in range(U.shape[0]):
            proj = U[i] / self.x_scale_  # z = U (x - mean) / scale
            top = np.argsort(-np.abs(U[i]).max(0))[: min(5, U.shape[2])]
            out.append(
                dict(
                    module=i, kind="module", projection=proj, offset=-(proj @ self.x_mean_), weights=U[i],
                    top_features=[(names[j], float(U[i][np.abs(U[i][:, j]).argmax(), j])) for j in top],
                    variance_share=float(self.module_variance_[i] / self.total_variance_),
                )
            )  # fmt: skip
        if self.model_.W is not None:
            W = self.model_.W[0].detach().numpy().T  # (out, m) on the standardised features
            top = np.argsort(-np.abs(W).max(0))[: min(5, W.shape[1])]
            out.append(
                dict(
                    module=U.shape[0], kind="linear", projection=W / self.x_scale_, offset=None, weights=W,
                    top_features=[(names[j], float(W[np.abs(W[:, j]).argmax(), j])) for j in top],
                    variance_share=float(self.module_variance_[-1] / self.total_variance_),
                )
            )  # fmt: skip
        return out

    def shape_functions(self, n_points: int = 200, feature_names=None) -> dict:
        """Each module's shape function on a grid of its input, for :func:`modscale.plots.plot_modules`.

        Returns a dict of numpy arrays (picklable, JSON-ready with ``tolist``): z (K, n_points), the grid
        along module input U_i x (first input coordinate for b > 1, the others at their median) from the
        0.5th to the 99.5th percentile of the fitting rows; f (K, n_points, out), the module's contribution
        to the prediction in the target's units (regression) or to the logits (classification), centred on
        the fitting rows' median input; density: per module (bin edges, density) of the fitting rows'
        inputs; variance_share (K,); outputs: names of the output columns; top_features per module.
        """
        check_is_fitted(self, "model_")
        n_points = check_int("n_points", n_points, low=2)
        net = self.model_.net
        q = self.module_input_quantiles_  # (101, K, b)
        lo, hi, med = (q[0] + q[1]) / 2, (q[-1] + q[-2]) / 2, q[50]  # (K, b)
        K, b = med.shape
        Z = np.repeat(med[:, None, :], n_points, axis=1)  # (K, G, b)
        Z[:, :, 0] = np.linspace(lo[:, 0], hi[:, 0], n_points).T
        with torch.no_grad():
            f = net.module_functions(torch.as_tensor(Z).unsqueeze(0))[0].numpy()  # (K, G, out)
        f = f * self._output_scale()
        mods = self.describe_modules(feature_names)[:K]
        return dict(
            z=Z[:, :, 0], f=f - f.mean(1, keepdims=True), density=self.module_input_density_,
            variance_share=np.array([d["variance_share"] for d in mods]), outputs=list(self.output_names_),
            top_features=[d["top_features"] for d in mods],
        )  # fmt: skip

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class ModularRegressor(RegressorMixin, _ModularEstimator):
    """Kernel-initialised modular network for regression, y = w^T x + sum_i f_i(U_i x); multi-output allowed.

    The defaults, and the measurements that chose them: the estimators guide (docs/estimators.md),
    "Defaults, and the measurement behind each".

    Parameters
    ----------
    n_modules
        An int K, or "auto" (default): the count :func:`modscale.rules.choose_n_modules` picks (held-out
        explained variance of the rule's deflation, at most ``max_modules`` and n_features / module_dim)
        plus ``spare_modules``; the deflation's projections are reused. n_modules * module_dim >
        n_features is an error.
    module_dim
        b, the input width of each module (1).
    projection_init
        "kernel" (the learning rule) or "random" (random unit directions).
    kernel
        The rule's kernel: "rbf", "laplace", "arccos", or "ntk" (the tangent kernel of the network's own
        first module at its initial weights).
    strategy
        The rule's strategy: "deflation" or "independent".
    width
        Hidden units of every module's MLP.
    depth
        Hidden layers of every module's MLP.
    linear_term
        Add w^T x + c, trained jointly with the modules, started at the leave-one-out ridge fit
        (regression) or at multinomial logistic regression (classification).
    alpha
        L2 penalty (alpha / 2) |theta|^2 on every trained parameter, added to the mean loss whatever n
        (1e-4; scikit-learn's MLP divides its alpha by n).
    max_steps
        The most Adam steps of the network's training.
    lr
        Adam's step size.
    batch_size
        Rows per Adam step.
    early_stopping
        On by default: hold out ``validation_fraction`` of the rows, keep the weights with the best held-out
        loss and stop after ``patience`` optimiser steps without improvement. Below 20 samples all rows
        train for max_steps.
    validation_fraction
        The rows held out to stop on (10 %).
    patience
        Optimiser steps without a better held-out loss before training stops (1000); the loss is read about
        10 times per patience window, at most once an epoch.
    max_modules
        The most modules "auto" may choose (8).
    spare_modules
        Modules added to the automatic count (1), started at the deflation's next direction (random where
        it found none): a module the search missed has a held-out gain that looks like noise, and a spare
        lets training find it. Ignored for an int n_modules.
    kernel_steps
        The rule's Adam steps per module (50: the rule sized to the estimator's n).
    kernel_batch_size
        The rule's rows per step: "auto" = n / 4, capped at 256.
    kernel_passes
        The rule's backfitting passes (1).
    device
        "auto" (CUDA when available), "cpu", "cuda"; the fitted model is moved to the CPU (float64), so it
        pickles and predicts on any machine.
    random_state
        int, RandomState or None (seed 0).

    Attributes
    ----------
    model_
        The trained :class:`modscale.models.AdditiveIndexNet`.
    n_modules_
        K, the modules trained.
    module_selection_
        choose_n_modules' evidence, with ``spare_modules``, or None.
    projections_
        (K, b, n_features) after training.
    initial_projections_
        (K, b, n_features) where training started.
    linear_alpha_
        The ridge penalty chosen for the linear term's start.
    history_
        The trainer's History.
    x_mean_
        The features' means.
    x_scale_
        The features' standard deviations (1 where constant).
    y_mean_
        The targets' means.
    y_scale_
        The targets' standard deviations (1 where constant).
    y_ndim_
        1 or 2: the shape of y as fitted.
    output_names_
        A name per output.
    n_features_in_
        As scikit-learn.
    feature_names_in_
        As scikit-learn: only when fitted on a frame with column names.
    modules_
        What each module learned (:meth:`ModularRegressor.describe_modules`).
    module_variance_
        (K + 1,): the variance of each module's contribution on the fitting rows, then the linear term's.
    total_variance_
        The variance of the whole prediction on the fitting rows.
    module_input_quantiles_
        (101, K, b): percentiles 0..100 of each module's input U_i x on the fitting rows.
    module_input_density_
        Per module, (bin edges, density) of its first input coordinate on the fitting rows.
    """

    def fit(self, X, y):
        X, y = self._validate_X(X, y, reset=True)
        y = np.asarray(y, dtype=np.float64)
        self.y_ndim_ = y.ndim
        self.output_names_ = ["y"] if y.ndim == 1 else [f"y{j}" for j in range(y.shape[1])]
        Y = y.reshape(len(y), -1)
        self.y_mean_ = Y.mean(axis=0)
        scale = Y.std(axis=0)
        self.y_scale_ = np.where(scale > 0, scale, 1.0)
        T = torch.tensor((Y - self.y_mean_) / self.y_scale_, dtype=torch.float32)  # (n, c)
        return self._fit_network(X, T, T, Y.shape[1])

    _loss = "mse"  # of the standardised targets

    @staticmethod
    def _linear_start(Xf: torch.Tensor, target: torch.Tensor, out_dim: int):
        """The linear term's start: the ridge fit of the targets, its penalty by leave-one-out, and the
        intercept that centres it on the fitting rows. Returns (W (m, c), c (c,), penalty)."""
        Xm, Tm = Xf.mean(0), target.mean(0)
        W, penalty = _ridge_loo((Xf - Xm).numpy(), (target - Tm).numpy())
        W = torch.as_tensor(W)
        return W, Tm - Xm @ W, penalty

    def _output_scale(self) -> np.ndarray:
        return self.y_scale_

    def predict(self, X) -> np.ndarray:
        """Predicted targets, (n,) when fitted on a 1-d y, else (n, c)."""
        out = self._outputs(X).numpy() * self.y_scale_ + self.y_mean_
        return out[:, 0] if self.y_ndim_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _cross_entropy(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of logits pred (S, B, C) against class indices y (S, B, 1) -> (S, B)."""
    S, B, C = pred.shape
    return F.cross_entropy(pred.reshape(S * B, C), y.reshape(S * B), reduction="none").reshape(S, B)


class ModularClassifier(ClassifierMixin, _ModularEstimator):
    """Kernel-initialised modular network for classification: one logit per class, summed over modules.

    Parameters as :class:`ModularRegressor`; the rule's targets are the one-hot class indicators. Needs at
    least two classes. Attributes: classes_ and those of the regressor but y_mean_, y_scale_, y_ndim_,
    linear_alpha_ (None: the linear term starts at logistic regression).
    """

    def fit(self, X, y):
        X, y = self._validate_X(X, y, reset=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.output_names_ = [f"logit {c}" for c in self.classes_]
        C = len(self.classes_)
        if C < 2:
            raise InvalidValue(f"y has 1 class ({self.classes_[0]!r}); a classifier needs at least 2 classes")
        codes = torch.as_tensor(codes.reshape(-1), dtype=torch.long)
        T = codes.unsqueeze(1)  # (n, 1) class indices for the trainer
        onehot = F.one_hot(codes, C).to(torch.float32)  # (n, C): the rule's targets
        return self._fit_network(X, T, onehot, C)

    _loss = staticmethod(_cross_entropy)

    def _linear_start(self, Xf: torch.Tensor, target: torch.Tensor, out_dim: int):
        """The linear term's start: multinomial logistic regression of the classes on the standardised
        features (L2 penalty C = 1, scikit-learn's default), as the regressor starts at the ridge fit.
        Returns (W (m, C), c (C,), None). With two classes, the one logit of the fit is split as +-1/2."""
        from sklearn.linear_model import LogisticRegression  # the only place it is needed

        codes = target.argmax(1).numpy()  # (n,) from the one-hot rule targets
        fit = LogisticRegression(max_iter=1000).fit(Xf.numpy(), codes)
        W, c = fit.coef_.T, fit.intercept_  # (m, C) and (C,), or (m, 1) and (1,) for two classes
        if out_dim == 2:
            W, c = np.concatenate([-W / 2, W / 2], axis=1), np.concatenate([-c / 2, c / 2])
        return torch.as_tensor(W), torch.as_tensor(c), None

    def _output_scale(self) -> float:
        return 1.0

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), (n, n_classes), columns in the order of classes_."""
        return torch.softmax(self._outputs(X), dim=-1).numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        """Log class probabilities (log-softmax of the logits, stable where probabilities underflow),
        (n, n_classes), columns in the order of classes_."""
        return torch.log_softmax(self._outputs(X), dim=-1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of every row, labels from classes_."""
        codes = self._outputs(X).argmax(dim=-1).numpy()
        return self.classes_[codes]


__all__ = ["ModularRegressor", "ModularClassifier", "PROJECTION_INITS"]
