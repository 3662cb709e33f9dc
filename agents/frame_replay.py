"""Replay that stores each frame once: stacked image observations rebuilt when sampled.

An Atari observation is a stack of the last K = 4 frames, ``(4, 84, 84)`` uint8, and the next
observation shares three of them. ``agents.replay.ReplayBuffer`` keeps obs and next_obs whole:
8 frames, 56 KB per transition, 56 GB for a million. ``FrameReplayBuffer`` keeps every frame
once in a ring of single frames and, per transition, the K frame slots of its observation and
the K of its next observation; a transition in the middle of an episode adds one frame (7 KB),
an episode's first adds the non-zero frames of its reset observation too. A million Atari
transitions take about 7.3 GB.

Exactness: what ``sample`` returns is exactly the observations that were added, frames before
an episode's start included (zero frames, as ``FrameStackObservation(padding_type="zero")``
and SB3's ``VecFrameStack`` give them, map to a shared zero slot; repeated frames, as
``padding_type="reset"`` gives them, to one slot). Nothing is assumed about the stacking that
is not checked when adding: an observation whose frames do not match what the buffer holds for
that env is stored frame by frame (so non-stacked images are correct too, just not smaller).

Ring wrap: a frame slot is reused once the ring comes round. The ring holds ``capacity +
capacity // 32`` frames plus a margin for the transitions being assembled, enough for episodes
of 32 steps or more; if shorter episodes need more frames, writing a frame whose slot an old
transition still uses drops that transition and every older one (``len`` falls below
``capacity``), never returning a frame that was overwritten.

The interface is ``ReplayBuffer``'s (``add``, ``sample``, ``sample_prioritized``,
``update_priorities``, ``state_dict``, ``load_state_dict``, ``len``), with the same n-step
returns and NEXT_STEP reset rows, so ``agents.dqn`` uses either. Storage is numpy on the CPU
whatever the device (a million frames rarely fit on a GPU); a sampled batch is gathered there
and moved to the device.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from agents.replay import Batch, SumTree, nstep_return, per_weights

ZERO_SLOT = 0  # slot 0 holds the zero frame; the ring is slots 1..frame_capacity


class FrameReplayBuffer:
    """Stacked-frame transitions ``(K, *frame_shape)`` stored as frame slots.

    ``add(obs, actions, rewards, next_obs, terminated, truncated, valid)`` takes one vector-env
    step (one row per env, rows where ``valid`` is False skipped), ``sample(n, generator)`` a
    ``Batch`` like ``ReplayBuffer.sample``.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, *,
                 num_envs: int = 1, n_step: int = 1, gamma: float = 0.99,
                 device: str | torch.device = "cpu", prioritized: bool = False,
                 alpha: float = 0.6, priority_eps: float = 1e-6,
                 frame_capacity: int | None = None):
        if len(obs_shape) < 2:
            raise ValueError(f"FrameReplayBuffer needs stacked frames (K, ...), got {obs_shape}")
        self.capacity, self.num_envs, self.n_step, self.gamma = capacity, num_envs, n_step, gamma
        self.device = torch.device(device)
        self.stack = int(obs_shape[0])
        # the frames of transitions being assembled (each env's current observation, whose
        # oldest frame is K - 1 steps old, and its pending n-step ones) were written within the
        # last K + n_step vector steps, at most 2K frames per env and step: the ring must not
        # come round within that
        self.margin = 2 * self.stack * num_envs * (self.stack + n_step + 1)
        self.frame_capacity = int(frame_capacity or capacity + capacity // 32 + self.margin)
        if self.frame_capacity <= self.margin:
            raise ValueError(f"frame_capacity must exceed {self.margin} for {num_envs} envs, "
                             f"n_step {n_step} and {self.stack} stacked frames")
        self.frames = np.zeros((self.frame_capacity + 1, *obs_shape[1:]), dtype=obs_dtype)
        slot_dtype = np.int32 if self.frame_capacity < 2**31 - 1 else np.int64
        self.obs_slots = np.zeros((capacity, self.stack), dtype=slot_dtype)
        self.next_slots = np.zeros((capacity, self.stack), dtype=slot_dtype)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        # per slot: the number of the newest transition that uses it (-1: none)
        self.last_use = np.full(self.frame_capacity + 1, -1, dtype=np.int64)
        self.frame_pos = 0  # the next ring slot is 1 + frame_pos
        self.frames_written = 0
        self.added = 0  # transitions ever added: transition number i lives in row i % capacity
        self.first = 0  # the number of the oldest transition still held
        self._current: list[np.ndarray | None] = [None] * num_envs  # slots of each env's obs
        self._pending = [deque() for _ in range(num_envs)] if n_step > 1 else None
        self.prioritized, self.alpha, self.priority_eps = prioritized, alpha, priority_eps
        self.tree = SumTree(capacity) if prioritized else None
        self.max_priority = 1.0

    def __len__(self) -> int:
        return self.added - self.first

    @property
    def pos(self) -> int:
        return self.added % self.capacity

    def nbytes(self) -> int:
        """Bytes of the preallocated storage (frames, slots, fields)."""
        arrays = (self.frames, self.obs_slots, self.next_slots, self.actions, self.rewards,
                  self.dones, self.discounts, self.last_use)
        return sum(a.nbytes for a in arrays)

    # ---- frames -----------------------------------------------------------------------------

    def _write_frame(self, frame: np.ndarray) -> int:
        """Put one frame into the ring; the slot's former transitions (and older) are dropped."""
        slot = 1 + self.frame_pos
        if self.last_use[slot] >= self.first:
            self._drop_through(int(self.last_use[slot]))
        self.last_use[slot] = -1
        self.frames[slot] = frame
        self.frame_pos = (self.frame_pos + 1) % self.frame_capacity
        self.frames_written += 1
        return slot

    def _frame_slot(self, frame: np.ndarray) -> int:
        return ZERO_SLOT if not frame.any() else self._write_frame(frame)

    def _store_stack(self, stack: np.ndarray) -> np.ndarray:
        """Slots for a whole stack: zero frames share slot 0, a frame equal to the one before
        it shares that one's slot, the others are written."""
        slots = np.empty(self.stack, dtype=self.obs_slots.dtype)
        for k in range(self.stack):
            if k > 0 and np.array_equal(stack[k], stack[k - 1]):
                slots[k] = slots[k - 1]
            else:
                slots[k] = self._frame_slot(stack[k])
        return slots

    def _slots(self, e: int, obs: np.ndarray, next_obs: np.ndarray):
        """The slots of env ``e``'s observation and next observation, storing what is new."""
        current = self._current[e]
        if current is None or not np.array_equal(self.frames[current], obs):
            current = self._store_stack(obs)
        if self.stack > 1 and np.array_equal(next_obs[:-1], obs[1:]):  # shifted by one frame
            nxt = np.empty_like(current)
            nxt[:-1] = current[1:]
            nxt[-1] = self._frame_slot(next_obs[-1])
        else:
            nxt = self._store_stack(next_obs)
        return current, nxt

    # ---- transitions ------------------------------------------------------------------------

    def _drop_through(self, number: int) -> None:
        """Forget transitions up to ``number`` (their frames are about to be overwritten)."""
        if self.tree is not None:
            rows = np.arange(self.first, number + 1) % self.capacity
            self.tree.update(rows, np.zeros(len(rows)))
        self.first = number + 1

    def _emit(self, obs_slots, action, reward: float, next_slots, done: bool,
              discount: float) -> None:
        number = self.added
        row = number % self.capacity
        if number - self.first >= self.capacity:
            self.first = number - self.capacity + 1  # the row's former transition goes
        self.obs_slots[row] = obs_slots
        self.next_slots[row] = next_slots
        self.actions[row] = action
        self.rewards[row] = reward
        self.dones[row] = done
        self.discounts[row] = discount
        self.last_use[obs_slots] = number
        self.last_use[next_slots] = number
        if self.tree is not None:
            self.tree.update(np.array([row]), np.array([self.max_priority ** self.alpha]))
        self.added += 1

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, valid) -> None:
        for e in np.flatnonzero(valid):
            obs_slots, next_slots = self._slots(e, obs[e], next_obs[e])
            ended = bool(terminated[e] or truncated[e])
            self._current[e] = None if ended else next_slots
            if self.n_step == 1:
                self._emit(obs_slots, actions[e], float(rewards[e]), next_slots,
                           bool(terminated[e]), self.gamma)
                continue
            pending = self._pending[e]
            pending.append((obs_slots, actions[e], float(rewards[e])))
            if ended:  # every pending step gets a shorter return
                while pending:
                    self._emit_pending(pending, next_slots, bool(terminated[e]))
                    pending.popleft()
            elif len(pending) == self.n_step:
                self._emit_pending(pending, next_slots, False)
                pending.popleft()

    def _emit_pending(self, pending: deque, next_slots, done: bool) -> None:
        first_slots, first_action, _ = pending[0]
        ret = nstep_return([r for _, _, r in pending], self.gamma)
        self._emit(first_slots, first_action, ret, next_slots, done, self.gamma ** len(pending))

    # ---- sampling ---------------------------------------------------------------------------

    def _rows(self, draws: np.ndarray) -> np.ndarray:
        """Draws in [0, len) -> rows: the row itself while the buffer holds rows 0..len-1 (as
        ReplayBuffer: the same draws give the same transitions), else counted from the oldest."""
        if len(self) == self.capacity or self.first == 0:
            return draws
        return (self.first + draws) % self.capacity

    def _batch(self, rows: np.ndarray, **extra) -> Batch:
        dev = self.device

        def to(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(dev, non_blocking=True)

        return Batch(to(self.frames[self.obs_slots[rows]]), to(self.actions[rows]),
                     to(self.rewards[rows]), to(self.frames[self.next_slots[rows]]),
                     to(self.dones[rows]), to(self.discounts[rows]), **extra)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """n transitions drawn uniformly with replacement (torch ``generator``'s draws)."""
        draws = torch.randint(len(self), (n,), device=generator.device, generator=generator)
        return self._batch(self._rows(draws.cpu().numpy()))

    def sample_prioritized(self, n: int, beta: float, rng: np.random.Generator) -> Batch:
        """n transitions drawn in proportion to priority^alpha, with importance weights."""
        total = self.tree.total
        targets = (np.arange(n) + rng.random(n)) * (total / n)
        idx = np.minimum(self.tree.find(targets), self.capacity - 1)
        leaves = self.tree.leaves(idx)
        if (leaves == 0).any():  # float round-off landed on a dropped row: take the newest
            idx = np.where(leaves == 0, (self.added - 1) % self.capacity, idx)
            leaves = self.tree.leaves(idx)
        weights = per_weights(leaves / total, len(self), beta)
        return self._batch(idx, indices=torch.as_tensor(idx, device=self.device),
                           weights=torch.as_tensor(weights, dtype=torch.float32,
                                                   device=self.device))

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        p = td_errors.detach().abs().double().cpu().numpy() + self.priority_eps
        self.tree.update(indices.cpu().numpy(), p ** self.alpha)
        self.max_priority = max(self.max_priority, float(p.max()))

    # ---- checkpoints ------------------------------------------------------------------------

    _ARRAYS = ("obs_slots", "next_slots", "actions", "rewards", "dones", "discounts",
               "last_use")

    def state_dict(self) -> dict:
        """Frames written so far, slots and fields (copies); each env's episode in progress and
        pending n-step transitions are not kept (a resumed agent starts fresh episodes)."""
        used = 1 + min(self.frames_written, self.frame_capacity)
        state = {name: torch.from_numpy(getattr(self, name).copy()) for name in self._ARRAYS}
        state["frames"] = torch.from_numpy(self.frames[:used].copy())
        state.update(added=self.added, first=self.first, frame_pos=self.frame_pos,
                     frames_written=self.frames_written, max_priority=self.max_priority,
                     frame_capacity=self.frame_capacity)
        if self.tree is not None:
            state["priorities"] = torch.from_numpy(
                self.tree.leaves(np.arange(self.capacity)).copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        if int(state["frame_capacity"]) != self.frame_capacity or \
                len(state["actions"]) != self.capacity:
            raise ValueError("the checkpoint's frame replay has another capacity "
                             f"({len(state['actions'])} transitions, {state['frame_capacity']} "
                             f"frames; this buffer: {self.capacity}, {self.frame_capacity})")
        for name in self._ARRAYS:
            getattr(self, name)[:] = state[name].numpy()
        frames = state["frames"].numpy()
        self.frames[:len(frames)] = frames
        self.added, self.first = int(state["added"]), int(state["first"])
        self.frame_pos, self.frames_written = int(state["frame_pos"]), int(state["frames_written"])
        self.max_priority = float(state["max_priority"])
        self._current = [None] * self.num_envs
        if self._pending is not None:
            self._pending = [deque() for _ in range(self.num_envs)]
        if self.tree is not None:
            self.tree.clear()
            priorities = state.get("priorities")
            if priorities is not None:
                self.tree.update(np.arange(self.capacity), priorities.numpy())
