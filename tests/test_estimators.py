"""ModularRegressor / ModularClassifier: scikit-learn's estimator checks, transform's second route, bad input,
and the end-to-end method (kernel-initialised modular vs random-initialised modular vs a monolithic MLP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from modscale.errors import InvalidParameter, InvalidType, InvalidValue
from modscale.estimators import ModularClassifier, ModularRegressor
from modscale.models import MLP, ModularNet
from modscale.rules import recovery_score
from modscale.tasks import SineTask
from modscale.training import train

# check_estimator fits each estimator about a hundred times: small training budgets keep that to seconds
QUICK = dict(max_steps=100, kernel_steps=10, kernel_batch_size=64, device="cpu")


@parametrize_with_checks(
    [ModularRegressor(**QUICK), ModularClassifier(**QUICK)],
    expected_failed_checks=lambda est: {},  # none: every check passes
)
def test_scikit_learn_contract(estimator, check):
    check(estimator)


def _data(n=300, m=6, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, m)) * np.arange(1, m + 1) + 3.0  # unstandardised features
    y = np.sin(X[:, 0] - 3.0) + 0.5 * np.cos((X[:, 1] - 3.0) / 2)
    return X, y


def test_transform_is_each_modules_projection_of_the_standardised_input():
    X, y = _data()
    est = ModularRegressor(n_modules=3, module_dim=2, random_state=0, **QUICK).fit(X, y)
    Z = est.transform(X)
    assert Z.shape == (300, 6) and Z.dtype == np.float64
    Xs = (X - est.x_mean_) / est.x_scale_  # second route: the standardisation and U by hand
    U = est.projections_.double().numpy()  # (K, b, m)
    expect = np.einsum("kbm,nm->nkb", U, Xs).reshape(300, 6)
    np.testing.assert_allclose(Z, expect, rtol=1e-5, atol=1e-5)  # projections_ is stored in float32
    np.testing.assert_allclose(est.fit_transform(X, y), Z, rtol=1e-12, atol=1e-12)


def test_feature_names_out_label_each_module_coordinate():
    X, y = _data()
    est = ModularRegressor(n_modules=2, module_dim=2, random_state=0, **QUICK).fit(X, y)
    names = est.get_feature_names_out()
    assert names.tolist() == ["module0_z0", "module0_z1", "module1_z0", "module1_z1"]
    assert names.tolist() == est.get_feature_names_out([f"x{i}" for i in range(6)]).tolist()
    with pytest.raises(ValueError, match="input_features"):
        est.get_feature_names_out(["a", "b"])
    import pandas as pd  # in the dev extra: set_output is the reason get_feature_names_out exists

    Xf = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    est = ModularRegressor(n_modules=2, module_dim=2, random_state=0, **QUICK).fit(Xf, y)
    frame = est.set_output(transform="pandas").transform(Xf)
    assert list(frame.columns) == names.tolist() and frame.shape == (300, 4)
    plain = ModularRegressor(n_modules=2, module_dim=2, random_state=0, **QUICK).fit(X, y).transform(X)
    np.testing.assert_allclose(frame.to_numpy(), plain, rtol=1e-10, atol=1e-12)  # a frame: the same model
    assert est.describe_modules()[0]["top_features"][0][0].startswith("f")  # the frame's own names


def test_regressor_reproducible_batch_independent_and_multioutput():
    X, y = _data()
    a = ModularRegressor(random_state=3, **QUICK).fit(X, y)
    b = ModularRegressor(random_state=3, **QUICK).fit(X, y)
    c = ModularRegressor(random_state=4, **QUICK).fit(X, y)
    assert np.array_equal(a.predict(X), b.predict(X))
    assert not np.allclose(a.predict(X), c.predict(X))
    halves = np.concatenate([a.predict(X[:100]), a.predict(X[100:])])
    np.testing.assert_allclose(halves, a.predict(X), rtol=1e-12, atol=1e-12)
    Y = np.stack([y, -2 * y + 1], axis=1)
    est = ModularRegressor(n_modules=4, random_state=0, **QUICK).fit(X, Y)
    assert est.predict(X).shape == (300, 2)
    assert est.initial_projections_.shape == (4, 1, 6) and est.history_.final_train.shape == (1,)


@pytest.mark.parametrize(
    "options",
    [
        dict(projection_init="random"),
        dict(strategy="independent"),
        dict(kernel="ntk"),
        dict(kernel="arccos", early_stopping=True),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_options_fit_and_predict(options):
    X, y = _data()
    est = ModularRegressor(random_state=0, **QUICK, **options).fit(X, y)
    assert np.isfinite(est.predict(X)).all()
    if options.get("projection_init") == "random":  # random unit rows from the network's own initialisation
        net = ModularNet(6, est.n_modules_, 1, 32, 2, generator=0)
        torch.testing.assert_close(est.initial_projections_, net.projections[0])


def test_classifier_labels_and_probabilities():
    X, y = _data()
    labels = np.where(y > 0.3, "high", np.where(y < -0.3, "low", "mid"))
    est = ModularClassifier(random_state=0, **{**QUICK, "max_steps": 300}).fit(X, labels)
    assert list(est.classes_) == ["high", "low", "mid"]
    P = est.predict_proba(X)
    assert P.shape == (300, 3)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), P, rtol=1e-10)
    assert np.array_equal(est.predict(X), est.classes_[P.argmax(1)])
    assert est.score(X, labels) > 0.8


def test_bad_input():
    X, y = _data()
    with pytest.raises(InvalidValue, match="module_dim"):
        ModularRegressor(module_dim=7, **QUICK).fit(X, y)
    with pytest.raises(InvalidValue, match="n_modules"):
        ModularRegressor(n_modules=0, **QUICK).fit(X, y)
    with pytest.raises(InvalidValue, match="projection_init"):
        ModularRegressor(projection_init="spectral", **QUICK).fit(X, y)
    with pytest.raises(InvalidValue, match="kernel"):
        ModularRegressor(kernel="poly", **QUICK).fit(X, y)
    bad = X.copy()
    bad[4, 2] = np.nan
    with pytest.raises(InvalidValue, match="NaN"):
        ModularRegressor(**QUICK).fit(bad, y)
    with pytest.raises(InvalidValue, match="infinity|inf"):
        ModularRegressor(**QUICK).fit(X, np.where(y > 0, np.inf, y))
    with pytest.raises(InvalidValue, match="1 class"):
        ModularClassifier(**QUICK).fit(X, np.zeros(300))
    with pytest.raises(InvalidValue, match="n_samples = 1"):
        ModularRegressor(**QUICK).fit(X[:1], y[:1])
    with pytest.raises(InvalidValue, match="validation_fraction"):
        ModularRegressor(validation_fraction=1.5, **QUICK).fit(X, y)
    for lr, said in (
        (0.0, "must be a float in the range \\(0.0, inf\\). Got 0.0 instead"),
        (float("inf"), "must be a float in the range \\(0.0, inf\\). Got inf instead"),
        ("fast", "must be a float in the range \\(0.0, inf\\). Got 'fast' instead"),
        (True, "must be a number, not a bool; got True instead"),
    ):
        # one error that is both a ValueError and a TypeError (as scikit-learn's), and a UsageError
        with pytest.raises(InvalidParameter, match="The 'lr' parameter of ModularRegressor " + said):
            ModularRegressor(**{**QUICK, "lr": lr}).fit(X, y)
    with pytest.raises(InvalidParameter, match="'patience' parameter .* in the range \\[1, inf\\). Got 0"):
        ModularRegressor(patience=0, **QUICK).fit(X, y)
    assert issubclass(InvalidParameter, ValueError) and issubclass(InvalidParameter, TypeError)


def _monolithic_mse(X, y, Xt, yt, width, steps, seed):
    """The baseline: an MLP on the same standardised data, trainer and schedule as the estimators."""
    mean, scale, ym, ys = X.mean(0), X.std(0), y.mean(), y.std()
    n = len(y)
    perm = np.random.default_rng(seed + 3).permutation(n)
    n_val = int(round(0.1 * n))
    Xs = torch.tensor((X - mean) / scale, dtype=torch.float32)
    Ys = torch.tensor((y - ym) / ys, dtype=torch.float32)[:, None]
    fit, val = perm[n_val:], perm[:n_val]
    net = MLP(X.shape[1], width, 2, generator=seed)
    train(
        net, (Xs[fit], Ys[fit]), steps=steps, lr=3e-3, batch_size=128, val=(Xs[val], Ys[val]),
        early_stopping=True, generator=seed + 2, device="cpu",
    )  # fmt: skip
    with torch.no_grad():
        pred = net(torch.tensor((Xt - mean) / scale, dtype=torch.float32))[:, 0].numpy() * ys + ym
    return float(np.mean((pred - yt) ** 2))


@pytest.mark.slow
def test_kernel_initialised_modular_network_beats_a_monolithic_network():
    """At test scale: SineTask(m=16, k=4), n = 2000 training samples, 3 seeds; the modular
    network (K=4, b=1, width 32, depth 2: 4676 parameters) against an MLP of similar size (width 60, depth 2:
    4741) with the same trainer (Adam 3e-3, batch 128, 1500 steps, early stopping on 10%). Test MSE is a
    fraction of Var y. Every seed must show the kernel-initialised network ahead; the random-initialised one
    is reported in docs/learning-rule.md, not asserted (it sometimes finds the modules during training)."""
    m, k, steps = 16, 4, 1500
    p = ModularNet.count_parameters(m, k, 1, 32, 2)
    width = MLP.width_for(p, m, 2)
    assert abs(MLP.count_parameters(m, width, 2) - p) / p < 0.05
    kernel, mono = [], []
    for seed in range(3):
        task = SineTask(m, k, generator=seed)
        X, y = (t.numpy() for t in task.sample(2000, generator=100 + seed))
        Xt, yt = (t.numpy() for t in task.sample(4000, generator=200 + seed))
        y, yt = y.ravel(), yt.ravel()
        est = ModularRegressor(
            n_modules=k, max_steps=steps, kernel_steps=100, kernel_batch_size=256, early_stopping=True,
            device="cpu", random_state=seed,
        ).fit(X, y)  # fmt: skip
        kernel.append(float(np.mean((est.predict(Xt) - yt) ** 2)))
        assert recovery_score(est.initial_projections_, task.projections) > 0.9
        mono.append(_monolithic_mse(X, y, Xt, yt, width, steps, seed))
    kernel, mono = np.array(kernel), np.array(mono)
    assert (kernel < 0.5 * mono).all(), (kernel, mono)


# defaults, looking inside, persistence --------------------------------------------------------------------
def test_ridge_leave_one_out_matches_refitting_without_each_row():
    """_ridge_loo's closed-form leave-one-out residuals against n refits (second route), and its W."""
    from modscale.estimators import _ridge_loo

    g = np.random.default_rng(1)
    X = g.normal(size=(40, 5))
    X -= X.mean(0)
    Y = (X @ g.normal(size=(5, 2))) + g.normal(size=(40, 2))
    W, a = _ridge_loo(X, Y)
    lam = a * 40
    np.testing.assert_allclose(W, np.linalg.solve(X.T @ X + lam * np.eye(5), X.T @ Y), rtol=1e-8)

    def loo_error(lam):
        err = 0.0
        for i in range(40):
            keep = np.arange(40) != i
            Wi = np.linalg.solve(X[keep].T @ X[keep] + lam * np.eye(5), X[keep].T @ Y[keep])
            err += ((Y[i] - X[i] @ Wi) ** 2).sum()
        return err

    from modscale.estimators import _RIDGE_ALPHAS

    errors = [loo_error(r * 40) for r in _RIDGE_ALPHAS]
    assert np.isclose(a, _RIDGE_ALPHAS[int(np.argmin(errors))])


def test_default_fit_stops_early_chooses_k_and_explains_its_modules():
    """Default estimator on a planted two-module task plus a linear trend: K chosen by choose_n_modules,
    early stopping, and modules_/shape_functions agree with predict and transform (second routes)."""
    g = np.random.default_rng(0)
    X = g.normal(size=(1500, 6)) * np.arange(1, 7) + 2.0
    Xs = (X - 2.0) / np.arange(1, 7)
    y = np.sin(2 * Xs[:, 0]) + Xs[:, 1] ** 2 + 0.5 * Xs[:, 2] + 0.05 * g.normal(size=1500)
    est = ModularRegressor(device="cpu", random_state=0, max_steps=3000, patience=300).fit(X, y)
    chosen = est.module_selection_
    assert chosen["n_modules"] >= 2 and est.n_modules_ == chosen["n_modules"] + chosen["spare_modules"]
    assert chosen["spare_modules"] == 1  # the default spare, started at the deflation's next direction
    # early stopping is on by default and stopped; patience counts optimiser steps (read every
    # min(epoch, patience / 10) = 11 steps here: 1350 fitting rows, batches of 128)
    stopped, best = est.history_.stopped_step[0], est.history_.best_step[0]
    assert stopped < 3000 and 300 <= stopped - best <= 300 + 11
    assert est.score(X, y) > 0.95
    mods = est.modules_
    assert [d["kind"] for d in mods] == ["module"] * est.n_modules_ + ["linear"]
    # projection in original units: z = projection @ x + offset is what transform returns
    Z = est.transform(X)
    for i, d in enumerate(mods[:-1]):
        np.testing.assert_allclose(X @ d["projection"].T + d["offset"], Z[:, [i]], rtol=1e-6, atol=1e-6)
    # the modules' contributions and the linear term add up to the prediction
    Xt = torch.tensor((X - est.x_mean_) / est.x_scale_)
    with torch.no_grad():
        parts = est._module_outputs(Xt).sum(0)[:, 0].numpy()
    offset = est.predict(X) - (parts * est.y_scale_ + est.y_mean_)
    np.testing.assert_allclose(offset, offset[0], atol=1e-8)  # the remainder is one constant (biases)
    shares = np.array([d["variance_share"] for d in mods])
    assert (shares >= 0).all() and shares.sum() > 0.5
    sf = est.shape_functions(n_points=50)
    assert sf["z"].shape == (est.n_modules_, 50) and sf["f"].shape == (est.n_modules_, 50, 1)
    # the module reading sin(2 x0) has x0 as its top feature and a shape that changes sign
    i = next(i for i, d in enumerate(mods[:-1]) if d["top_features"][0][0] == "x0")
    assert np.ptp(sf["f"][i, :, 0]) > 1.0


def test_pickle_round_trip_predicts_the_same_on_the_cpu():
    import pickle

    X, y = _data()
    est = ModularRegressor(random_state=0, **QUICK).fit(X, y)
    assert all(p.device.type == "cpu" for p in est.model_.parameters())  # fitted anywhere, kept on the CPU
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    labels = (y > 0).astype(int)
    clf = ModularClassifier(random_state=0, **QUICK).fit(X, labels)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), clf.predict_proba(X))


def test_plot_modules_draws_one_panel_per_module():
    from modscale.plots import plot_modules

    X, y = _data()
    est = ModularRegressor(n_modules=3, random_state=0, **QUICK).fit(X, y)
    fig = plot_modules(est.shape_functions(), columns=2)
    drawn = [ax for ax in fig.axes if ax.lines]
    assert len(drawn) == 3
    clf = ModularClassifier(n_modules=2, random_state=0, **QUICK).fit(X, np.digitize(y, [-0.5, 0.5]))
    fig = plot_modules(clf.shape_functions())
    assert len([ax for ax in fig.axes if ax.lines][0].lines) == 3  # one logit per class
    with pytest.raises(InvalidValue, match="shape_functions"):
        plot_modules({"z": 1})


def test_too_many_modules_and_bad_new_options():
    X, y = _data()
    with pytest.raises(InvalidValue, match="n_modules \\* module_dim must be <= the number of features"):
        ModularRegressor(n_modules=4, module_dim=2, **QUICK).fit(X, y)
    with pytest.raises(
        InvalidParameter, match="'n_modules' parameter of ModularRegressor must be a str among"
    ):
        ModularRegressor(n_modules="many", **QUICK).fit(X, y)
    with pytest.raises(InvalidValue, match="alpha"):
        ModularRegressor(alpha=-1.0, **QUICK).fit(X, y)
    with pytest.raises(InvalidType, match="linear_term"):
        ModularRegressor(linear_term="yes", **QUICK).fit(X, y)
    with pytest.raises(InvalidValue, match="kernel_batch_size"):
        ModularRegressor(**{**QUICK, "kernel_batch_size": "big"}).fit(X, y)


def test_spare_module_beyond_the_deflation_keeps_its_random_start():
    """max_modules = 1: the count stops at 1 (the curve had not levelled off), the deflation found one
    direction, and the spare module starts where the network's own initialisation put it."""
    X, y = _data()
    est = ModularRegressor(max_modules=1, random_state=5, **QUICK).fit(X, y)
    assert est.module_selection_["n_modules"] == 1 and est.module_selection_["spare_modules"] == 1
    assert est.n_modules_ == 2
    net = ModularNet(6, 2, 1, est.width, est.depth, generator=5)  # the estimator's seed draws the network
    torch.testing.assert_close(est.initial_projections_[1], net.projections[0][1])
    torch.testing.assert_close(est.initial_projections_[0], est.module_selection_["projections"][0])
    none = ModularRegressor(max_modules=1, spare_modules=0, random_state=5, **QUICK).fit(X, y)
    assert none.n_modules_ == 1 and none.module_selection_["spare_modules"] == 0
    fixed = ModularRegressor(n_modules=3, spare_modules=4, random_state=5, **QUICK).fit(X, y)
    assert fixed.n_modules_ == 3  # an int n_modules is what it says
