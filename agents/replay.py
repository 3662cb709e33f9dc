"""Replay for DQN: a circular buffer of transitions with uniform or prioritized sampling.

A stored transition is ``(obs, action, reward, next_obs, done, discount)`` and its TD target is
``reward + discount * (1 - done) * V(next_obs)``. For 1-step transitions ``discount = gamma``;
for n-step ones ``reward`` is the discounted sum of up to n rewards and ``discount = gamma**k``
with k the number of rewards summed (fewer than n when the episode ended first). ``done`` marks a
termination only: a truncated (time-limit) episode bootstraps from its true final observation.

Storage is preallocated tensors on the device, so a sampled batch needs no copy to reach the
network. On the CPU the tensors share memory with numpy arrays that the per-step writes use
(a numpy row write costs about a microsecond, a torch one several).

Prioritized replay (Schaul et al. 2016, proportional variant): P(i) = p_i^alpha / sum_k p_k^alpha,
new transitions get the largest priority seen so far, a batch is drawn stratified (one draw per
equal slice of the priority mass) and carries importance weights (N P(i))^-beta, normalised by
their batch maximum.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np
import torch

# ---- pure math --------------------------------------------------------------------------------


def nstep_return(rewards, gamma: float) -> float:
    """sum_k gamma^k r_k: the discounted sum of a short run of rewards."""
    total, scale = 0.0, 1.0
    for r in rewards:
        total += scale * float(r)
        scale *= gamma
    return total


def per_probabilities(priorities: np.ndarray, alpha: float) -> np.ndarray:
    """P(i) = p_i^alpha / sum_k p_k^alpha."""
    scaled = np.asarray(priorities, dtype=np.float64) ** alpha
    return scaled / scaled.sum()


def per_weights(probabilities: np.ndarray, buffer_len: int, beta: float) -> np.ndarray:
    """Importance weights (N P(i))^-beta, divided by their maximum so the largest is 1."""
    w = (buffer_len * np.asarray(probabilities, dtype=np.float64)) ** (-beta)
    return w / w.max()


# ---- the buffer -------------------------------------------------------------------------------


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, *obs_shape), the stored dtype
    actions: torch.Tensor  # (B,) int64
    rewards: torch.Tensor  # (B,) float32
    next_obs: torch.Tensor
    dones: torch.Tensor  # (B,) float32, 1 = terminated (no bootstrap)
    discounts: torch.Tensor  # (B,) float32, gamma**k
    indices: torch.Tensor | None = None  # prioritized replay: the rows, for update_priorities
    weights: torch.Tensor | None = None  # prioritized replay: importance weights

    def rows(self, start: int, stop: int) -> Batch:
        return Batch(*(None if t is None else t[start:stop] for t in self))


_FIELDS = ("obs", "actions", "rewards", "next_obs", "dones", "discounts")


class ReplayBuffer:
    """Circular transition store; ``add`` takes one vector-env step, ``sample`` a batch.

    ``add(obs, actions, rewards, next_obs, terminated, truncated, valid)`` takes arrays with one
    row per env; rows where ``valid`` is False (the reset step of a NEXT_STEP-autoreset vector
    env) are skipped. With ``n_step > 1`` each env keeps its last n steps pending and emits a
    transition once it has n of them, or all pending ones when its episode ends.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, *,
                 num_envs: int = 1, n_step: int = 1, gamma: float = 0.99,
                 device: str | torch.device = "cpu", prioritized: bool = False,
                 alpha: float = 0.6, priority_eps: float = 1e-6):
        self.capacity, self.num_envs, self.n_step, self.gamma = capacity, num_envs, n_step, gamma
        self.device = torch.device(device)
        obs_dtype = torch.from_numpy(np.zeros(0, dtype=obs_dtype)).dtype
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.dones = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.discounts = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        # numpy views of the same memory for fast writes (CPU only)
        self._np = ({f: getattr(self, f).numpy() for f in _FIELDS}
                    if self.device.type == "cpu" else None)
        self.pos, self.size = 0, 0
        self._pending = [deque() for _ in range(num_envs)] if n_step > 1 else None
        self.prioritized, self.alpha, self.priority_eps = prioritized, alpha, priority_eps
        self.tree = SumTree(capacity) if prioritized else None
        self.max_priority = 1.0

    def __len__(self) -> int:
        return self.size

    # ---- writing ------------------------------------------------------------------------------

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, valid) -> None:
        if self.n_step == 1:
            if valid.all():
                self._write(obs, actions, rewards, next_obs, terminated,
                            np.full(len(valid), self.gamma))
            elif valid.any():
                self._write(obs[valid], actions[valid], rewards[valid], next_obs[valid],
                            terminated[valid], np.full(int(valid.sum()), self.gamma))
            return
        for e in np.flatnonzero(valid):
            pending = self._pending[e]
            pending.append((obs[e].copy(), actions[e], float(rewards[e])))
            if terminated[e] or truncated[e]:
                while pending:  # the episode ended: every pending step gets a shorter return
                    self._emit(pending, next_obs[e], bool(terminated[e]))
                    pending.popleft()
            elif len(pending) == self.n_step:
                self._emit(pending, next_obs[e], False)
                pending.popleft()

    def _emit(self, pending: deque, next_obs, done: bool) -> None:
        first_obs, first_action, _ = pending[0]
        ret = nstep_return([r for _, _, r in pending], self.gamma)
        self._write(first_obs[None], np.array([first_action]), np.array([ret]), next_obs[None],
                    np.array([done]), np.array([self.gamma ** len(pending)]))

    def _write(self, obs, actions, rewards, next_obs, dones, discounts) -> None:
        k = len(actions)
        if self.pos + k <= self.capacity:
            rows = slice(self.pos, self.pos + k)
        else:
            rows = (self.pos + np.arange(k)) % self.capacity
        values = (obs, actions, rewards, next_obs, dones, discounts)
        if self._np is not None:
            for name, v in zip(_FIELDS, values, strict=True):
                self._np[name][rows] = v
        else:
            idx = rows if isinstance(rows, slice) else torch.as_tensor(rows, device=self.device)
            for name, v in zip(_FIELDS, values, strict=True):
                t = getattr(self, name)
                t[idx] = torch.as_tensor(np.asarray(v), device=self.device).to(t.dtype)
        if self.tree is not None:
            leaf = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
            self.tree.update(leaf, np.full(k, self.max_priority ** self.alpha))
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    # ---- sampling -----------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """n transitions drawn uniformly with replacement."""
        idx = torch.randint(self.size, (n,), device=self.device, generator=generator)
        return Batch(*(getattr(self, f)[idx] for f in _FIELDS))

    def sample_prioritized(self, n: int, beta: float, rng: np.random.Generator) -> Batch:
        """n transitions drawn in proportion to priority^alpha, with importance weights."""
        total = self.tree.total
        targets = (np.arange(n) + rng.random(n)) * (total / n)  # one draw per slice of mass
        idx = np.minimum(self.tree.find(targets), self.size - 1)
        probs = self.tree.leaves(idx) / total
        weights = per_weights(probs, self.size, beta)
        t_idx = torch.as_tensor(idx, device=self.device)
        return Batch(*(getattr(self, f)[t_idx] for f in _FIELDS), indices=t_idx,
                     weights=torch.as_tensor(weights, dtype=torch.float32, device=self.device))

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        p = td_errors.detach().abs().double().cpu().numpy() + self.priority_eps
        self.tree.update(indices.cpu().numpy(), p ** self.alpha)
        self.max_priority = max(self.max_priority, float(p.max()))

    # ---- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The stored transitions (copied: a slice would save the whole preallocated storage)."""
        n = self.size
        state = {f: getattr(self, f)[:n].cpu().clone() for f in _FIELDS}
        state.update(pos=self.pos, size=n, max_priority=self.max_priority)
        if self.tree is not None:
            state["priorities"] = torch.from_numpy(self.tree.leaves(np.arange(n)).copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"checkpoint holds {n} transitions, capacity is {self.capacity}")
        for f in _FIELDS:
            getattr(self, f)[:n] = state[f].to(self.device)
        self.pos, self.size = int(state["pos"]) % self.capacity, n
        self.max_priority = float(state["max_priority"])
        if self.tree is not None:
            self.tree.clear()
            if "priorities" in state:
                self.tree.update(np.arange(n), state["priorities"].numpy())
            else:
                self.tree.update(np.arange(n), np.full(n, self.max_priority ** self.alpha))


class SumTree:
    """A binary tree whose leaves hold priorities and whose inner nodes hold subtree sums.

    ``find(v)`` descends to the leaf where the running sum of leaves passes ``v``: drawing ``v``
    uniformly in [0, total) picks leaf i with probability leaf_i / total. Vectorised over draws.
    """

    def __init__(self, capacity: int):
        self.n_leaves = 1 << max(capacity - 1, 0).bit_length()
        self.nodes = np.zeros(2 * self.n_leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def clear(self) -> None:
        self.nodes[:] = 0.0

    def leaves(self, idx: np.ndarray) -> np.ndarray:
        return self.nodes[self.n_leaves + np.asarray(idx)]

    def update(self, idx: np.ndarray, values: np.ndarray) -> None:
        node = self.n_leaves + np.asarray(idx)
        self.nodes[node] = values
        node = np.unique(node // 2)
        while node[0] >= 1:
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]
            if node[0] == 1:
                break
            node = np.unique(node // 2)

    def find(self, values: np.ndarray) -> np.ndarray:
        v = np.array(values, dtype=np.float64)
        node = np.ones(len(v), dtype=np.int64)
        while node[0] < self.n_leaves:
            left = 2 * node
            go_right = v >= self.nodes[left]
            v -= np.where(go_right, self.nodes[left], 0.0)
            node = left + go_right
        return node - self.n_leaves
