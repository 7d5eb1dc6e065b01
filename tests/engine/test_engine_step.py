"""value_and_grad backends and the train step (explicit BN buffers, autocast, loss scale)."""

from __future__ import annotations

import pytest
import torch
from engine_a_toys import ToyNet, make_loss_fn, split, toy_data

from detfn.engine.state import TrainState
from detfn.engine.step import batch_size_of, make_train_step, value_and_grad


def setup():
    torch.manual_seed(0)
    model = ToyNet()
    params, buffers = split(model)
    return model, params, buffers, toy_data(4)


def test_autograd_and_func_backends_give_equal_grads_and_buffers():
    model, params, buffers, batch = setup()
    buffers_func = {n: b.clone() for n, b in buffers.items()}
    (loss_a, aux_a), grads_a = value_and_grad(make_loss_fn(model))(params, buffers, batch)
    (loss_f, aux_f), grads_f = value_and_grad(make_loss_fn(model), "func")(
        params, buffers_func, batch
    )
    torch.testing.assert_close(loss_a, loss_f)
    assert set(grads_a) == set(grads_f) == set(params)
    for name in params:
        torch.testing.assert_close(grads_a[name], grads_f[name], rtol=1e-6, atol=1e-8)
    for name in buffers:
        torch.testing.assert_close(buffers[name], buffers_func[name])

    # Reference: the eager module with .backward(); BN running stats equal the explicit buffers.
    model.train()
    x, y = batch
    logits = model(x)
    ref = torch.nn.functional.cross_entropy(logits, y) + 0.1 * logits.pow(2).mean()
    ref.backward()
    torch.testing.assert_close(loss_a, ref.detach())
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads_a[name], p.grad, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(buffers["bn.running_mean"], model.bn.running_mean)
    assert buffers["bn.num_batches_tracked"].item() == 1
    torch.testing.assert_close(aux_a["loss_cls"].detach(), aux_f["loss_cls"])


def test_params_passed_in_are_not_modified_and_unused_params_get_no_grad():
    def loss_fn(params, buffers, batch):
        return (params["used"] * batch).sum(), {}

    params = {"used": torch.ones(3), "unused": torch.ones(3)}
    (loss, _), grads = value_and_grad(loss_fn)(params, {}, torch.arange(3.0))
    assert loss.item() == 3.0 and set(grads) == {"used"}
    assert grads["used"].tolist() == [0.0, 1.0, 2.0]
    assert not params["used"].requires_grad
    with pytest.raises(ValueError, match="backend must be 'autograd' or 'func'"):
        value_and_grad(loss_fn, "jax")


def test_train_step_outputs_and_loss_scale():
    model, params, buffers, batch = setup()
    state = TrainState(params=params, buffers=buffers, opt_state=None)
    out = make_train_step(make_loss_fn(model))(state, batch)
    assert set(out) == {"loss", "losses", "grads", "batch_size"}
    assert out["batch_size"] == 4 and not out["loss"].requires_grad
    assert set(out["losses"]) == {"loss_cls", "loss_reg"}
    assert not out["losses"]["loss_cls"].requires_grad

    _, params2, buffers2, _ = setup()
    state2 = TrainState(params=params2, buffers=buffers2, opt_state=None)
    scaled = make_train_step(make_loss_fn(model), loss_scale=lambda s: 8.0)(state2, batch)
    torch.testing.assert_close(scaled["loss"], out["loss"])  # reported loss is unscaled
    for name in params:
        torch.testing.assert_close(scaled["grads"][name], 8.0 * out["grads"][name])


def test_bf16_autocast_step_runs_forward_in_bf16():
    model, params, buffers, batch = setup()
    seen = []

    def loss_fn(p, b, x):
        loss, aux = make_loss_fn(model)(p, b, x)
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return loss, aux

    state = TrainState(params=params, buffers=buffers, opt_state=None)
    out = make_train_step(loss_fn, autocast_dtype=torch.bfloat16)(state, batch)
    assert seen == [torch.bfloat16]
    assert out["loss"].dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in out["grads"].values())


def test_loss_fn_contract_errors():
    state = TrainState(params={"w": torch.ones(2)}, buffers={}, opt_state=None)
    step = make_train_step(lambda p, b, x: (p["w"] * 2, {}))
    with pytest.raises(TypeError, match="loss a 0-d tensor, got Tensor of shape \\(2,\\)"):
        step(state, torch.ones(1, 2))
    step = make_train_step(lambda p, b, x: (p["w"].sum(), [1]))
    with pytest.raises(TypeError, match="aux a dict"):
        step(state, torch.ones(1, 2))
    assert batch_size_of((torch.ones(5, 2), torch.ones(5))) == 5
    with pytest.raises(TypeError, match="batch size of a object"):
        batch_size_of(object())
