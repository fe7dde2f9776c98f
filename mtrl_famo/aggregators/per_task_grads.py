"""Per-task gradient matrices for the gradient aggregators, and helpers around them.

The replay batch is split by task and task ``i``'s loss depends only on task
``i``'s rows, so the ``[num_tasks, num_params]`` matrix ``G`` comes from one
batched backward: ``torch.func.vmap`` over the task dimension of
``torch.func.grad`` of a one-task loss. ``per_task_gradients_loop`` is the
simple reference (``num_tasks`` separate backward passes) used in tests.

A one-task loss is a function ``task_loss_fn(params, *one_task_args) -> scalar``
where ``params`` maps parameter names to tensors; it typically calls
``torch.func.functional_call(module, params, inputs)``. Example, a critic::

    def critic_loss(params, obs, act, target):  # [batch, obs_dim], [batch, act_dim], [batch]
        q = torch.func.functional_call(critic, params, (obs, act))
        return ((q.squeeze(-1) - target) ** 2).mean()

    G, layout = per_task_gradients(critic, critic_loss, (obs, act, target))  # each [num_tasks, batch, ...]

Randomness: under ``vmap`` a random operation inside ``task_loss_fn`` is an
error. Sample any noise (e.g. the actor's reparameterisation noise) outside
and pass it as one of the ``task_batched_args``. Other networks used inside the
loss (e.g. the critic in the actor loss) may be called as ordinary modules;
they are constants for the gradient. Modules that update buffers in place
during the forward pass (batch norm in training mode) are not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

#: ``((name, shape), ...)`` of the parameters, in the order of the columns of ``G``.
ParamLayout = tuple[tuple[str, torch.Size], ...]

TaskLossFn = Callable[..., Tensor]


def per_task_gradients(
    module: nn.Module,
    task_loss_fn: TaskLossFn,
    task_batched_args: Sequence[Tensor] | Tensor,
    params: Mapping[str, Tensor] | None = None,
    *,
    return_losses: bool = False,
    has_aux: bool = False,
) -> tuple[Tensor, ...]:
    """Per-task gradients with one batched backward (``vmap`` of ``grad``).

    :param module: the network whose parameters are differentiated.
    :param task_loss_fn: ``task_loss_fn(params, *one_task_args) -> scalar``, one
        task's loss; ``params`` is a ``{name: tensor}`` dict (see module docs).
    :param task_batched_args: tensors with a leading task dimension ``num_tasks``,
        e.g. obs ``[num_tasks, batch, obs_dim]``; ``task_loss_fn`` sees one slice
        of each, e.g. ``[batch, obs_dim]``. They are treated as constants.
    :param params: the ``{name: parameter}`` to differentiate; default: the
        module's parameters that require grad, in ``named_parameters()`` order.
    :param return_losses: also return the ``[num_tasks]`` task losses (detached),
        computed in the same pass at no extra cost.
    :param has_aux: ``task_loss_fn`` returns ``(loss, aux)``; ``aux`` (a tensor, stacked
        over tasks to ``[num_tasks, ...]``) is returned last, from the same pass.
    :returns: ``(G, layout)``, or ``(G, layout, losses)`` with ``return_losses``, each
        followed by ``aux`` with ``has_aux``:
        ``G`` ``[num_tasks, num_params]`` (no autograd graph), row ``i`` the
        flattened gradient of task ``i``'s loss, columns in ``layout`` order;
        ``layout`` the ``(name, shape)`` of each parameter.
    """
    named = _named_params(module, params)
    args, num_tasks = _check_task_args(task_batched_args)
    detached = {name: p.detach() for name, p in named.items()}
    batched = torch.func.vmap(torch.func.grad_and_value(task_loss_fn, has_aux=has_aux),
                              in_dims=(None,) + (0,) * len(args))
    with torch.no_grad():  # no graph outside the transform (e.g. through a critic used in the loss)
        grads, value = batched(detached, *args)  # {name: [num_tasks, *shape]}, [num_tasks] or ([num_tasks], aux)
    losses, aux = value if has_aux else (value, None)
    G = torch.cat([grads[name].reshape(num_tasks, -1) for name in named], dim=1)
    return _result(G, _layout(named), losses, aux, return_losses, has_aux)


def per_task_gradients_loop(
    module: nn.Module,
    task_loss_fn: TaskLossFn,
    task_batched_args: Sequence[Tensor] | Tensor,
    params: Mapping[str, Tensor] | None = None,
    *,
    return_losses: bool = False,
    has_aux: bool = False,
) -> tuple[Tensor, ...]:
    """Reference for ``per_task_gradients``: one ``autograd.grad`` per task.

    Same arguments and result; ``task_loss_fn`` gets the parameters themselves.
    ``num_tasks`` times the backward cost, kept for tests and benchmarks.
    """
    named = _named_params(module, params)
    args, num_tasks = _check_task_args(task_batched_args)
    tensors = list(named.values())
    rows, losses, auxes = [], [], []
    for i in range(num_tasks):
        with torch.enable_grad():
            loss = task_loss_fn(named, *(a[i] for a in args))
            if has_aux:
                loss, aux = loss
                auxes.append(aux.detach())
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, tensors)])
        )
        losses.append(loss.detach())
    G = torch.stack(rows)
    return _result(G, _layout(named), torch.stack(losses), torch.stack(auxes) if has_aux else None,
                   return_losses, has_aux)


def _result(G: Tensor, layout: ParamLayout, losses: Tensor, aux: Tensor | None, return_losses: bool,
            has_aux: bool) -> tuple[Tensor, ...]:
    return (G, layout) + ((losses,) if return_losses else ()) + ((aux,) if has_aux else ())


def flatten_grads(module_or_params: nn.Module | Mapping[str, Tensor] | Iterable[Tensor]) -> Tensor:
    """The ``.grad`` of the parameters, flattened and concatenated: ``[num_params]``.

    Parameters without a gradient contribute zeros. For a module, its
    parameters that require grad, in ``named_parameters()`` order (the column
    order of ``per_task_gradients``).
    """
    tensors = _param_list(module_or_params)
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in tensors])


def assign_flat_grad(module_or_params: nn.Module | Mapping[str, Tensor] | Iterable[Tensor], flat: Tensor) -> None:
    """Write the direction ``flat`` ``[num_params]`` into the parameters' ``.grad``.

    Overwrites (does not accumulate into) existing gradients, so that an
    ``optimizer.step()`` follows ``flat``. Column order as in ``flatten_grads``.
    """
    tensors = _param_list(module_or_params)
    num_params = sum(p.numel() for p in tensors)
    if flat.shape != (num_params,):
        raise ValueError(f"expected flat of shape [num_params={num_params}], got {tuple(flat.shape)}")
    flat = flat.detach()
    offset = 0
    for p in tensors:
        piece = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is None:
            p.grad = piece.to(device=p.device, dtype=p.dtype, copy=True)
        else:
            p.grad.copy_(piece)


def gradient_diagnostics(G: Tensor) -> dict[str, float]:
    """Conflict statistics of per-task gradients.

    :param G: ``[num_tasks, num_params]``.
    :returns: ``cos_sim_mean``, the mean cosine similarity over task pairs
        ``i < j`` (a pair with a zero gradient counts as 0), and
        ``conflict_fraction``, the fraction of pairs with ``g_i . g_j < 0``.
        With one task: 1.0 and 0.0.
    """
    stats = gradient_diagnostic_tensors(G)
    values = torch.stack(list(stats.values())).tolist()  # one sync
    return dict(zip(stats, values))


def gradient_diagnostic_tensors(G: Tensor) -> dict[str, Tensor]:
    """:func:`gradient_diagnostics` as 0-dim tensors on ``G``'s device (no host sync)."""
    if G.ndim != 2 or G.shape[0] < 1:
        raise ValueError(f"expected G of shape [num_tasks, num_params], got {tuple(G.shape)}")
    k = G.shape[0]
    if k == 1:
        return {"cos_sim_mean": G.new_tensor(1.0), "conflict_fraction": G.new_tensor(0.0)}
    G = G.detach()
    gram = G @ G.T
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gram / denom.clamp_min(torch.finfo(gram.dtype).tiny), torch.zeros_like(gram))
    i, j = torch.triu_indices(k, k, offset=1, device=G.device)
    return {"cos_sim_mean": cos[i, j].mean(), "conflict_fraction": (gram[i, j] < 0).to(gram.dtype).mean()}


def _named_params(module: nn.Module, params: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    named = (
        {name: p for name, p in module.named_parameters() if p.requires_grad} if params is None else dict(params)
    )
    if not named:
        raise ValueError(f"no parameters to differentiate in {type(module).__name__} (none requires grad)")
    return named


def _param_list(module_or_params: nn.Module | Mapping[str, Tensor] | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(module_or_params, nn.Module):
        return [p for p in module_or_params.parameters() if p.requires_grad]
    if isinstance(module_or_params, Mapping):
        return list(module_or_params.values())
    return list(module_or_params)


def _check_task_args(task_batched_args: Sequence[Tensor] | Tensor) -> tuple[tuple[Tensor, ...], int]:
    args = (task_batched_args,) if isinstance(task_batched_args, Tensor) else tuple(task_batched_args)
    if not args:
        raise ValueError("task_batched_args is empty; pass tensors with a leading task dimension")
    for n, a in enumerate(args):
        if not isinstance(a, Tensor) or a.ndim < 1:
            raise ValueError(f"task_batched_args[{n}] must be a tensor [num_tasks, ...], got {_describe(a)}")
    num_tasks = args[0].shape[0]
    if num_tasks < 1 or any(a.shape[0] != num_tasks for a in args):
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        raise ValueError(f"task_batched_args must share a leading task dimension >= 1, got shapes {shapes}")
    return tuple(a.detach() for a in args), num_tasks


def _layout(named: Mapping[str, Tensor]) -> ParamLayout:
    return tuple((name, p.shape) for name, p in named.items())


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
