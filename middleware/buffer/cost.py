"""What a request costs the upstream when it does not wait: the controller's yardstick for queueing.

Two running least-squares fits, each forgetting old samples (``memory`` is the horizon):

- ``PromptCost``: time to first token = a + b * prompt_tokens, for streamed replies;
- ``ReplyCost``: a whole reply's time = a + b * prompt_tokens + c * completion_tokens, for replies that
  are not streamed, where the first token is not seen.

Samples carry weights, so the controller can keep the fits on the lower envelope (slow samples, which
waited inside the upstream, do not move them).
"""

from __future__ import annotations


class PromptCost:
    """Running least-squares fit of uncongested TTFT = a + b * prompt_tokens, forgetting old samples."""

    __slots__ = ("_decay", "_sw", "_sx", "_sxx", "_sxy", "_sy", "count")

    def __init__(self, memory: int) -> None:
        self._decay = 1.0 - 1.0 / memory
        self._sw = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self.count = 0

    def add(self, tokens: int, seconds: float, weight: float = 1.0) -> None:
        d = self._decay
        x = float(tokens)
        self._sw = self._sw * d + weight
        self._sx = self._sx * d + weight * x
        self._sy = self._sy * d + weight * seconds
        self._sxx = self._sxx * d + weight * x * x
        self._sxy = self._sxy * d + weight * x * seconds
        self.count += 1

    def expected(self, tokens: int) -> float:
        """The fitted TTFT for a prompt of ``tokens``."""
        if self._sw <= 0:
            return 0.0
        mean_x, mean_y = self._sx / self._sw, self._sy / self._sw
        var_x = self._sxx / self._sw - mean_x * mean_x
        slope = 0.0
        if var_x > 1.0:  # prompts of different lengths seen: fit the per-token cost
            slope = max(0.0, (self._sxy / self._sw - mean_x * mean_y) / var_x)
        # Never below a tenth of the mean: a noisy fit's negative intercept must not make short prompts look
        # congested.
        intercept = max(mean_y - slope * mean_x, 0.1 * mean_y)
        return max(intercept + slope * tokens, 1e-6)


class ReplyCost:
    """Running least-squares fit of an uncongested whole reply's time = a + b * prompt + c * completion
    tokens. Decoding dominates a reply, so where the two cannot both be fitted (one of them never varies,
    or they vary together), the fit keeps the completion tokens' slope alone."""

    __slots__ = ("_decay", "_s")

    # Decayed weighted sums: w, p, c, t, pp, cc, pc, pt, ct (p prompt, c completion tokens, t seconds).
    def __init__(self, memory: int) -> None:
        self._decay = 1.0 - 1.0 / memory
        self._s = [0.0] * 9

    def add(self, prompt: int, completion: int, seconds: float, weight: float = 1.0) -> None:
        d, t = self._decay, seconds
        p, c = float(prompt), float(completion)
        w, sp, sc, st, spp, scc, spc, spt, sct = self._s  # each sum decays, then takes the sample's term
        self._s = [
            w * d + weight, sp * d + weight * p, sc * d + weight * c, st * d + weight * t,
            spp * d + weight * (p * p), scc * d + weight * (c * c), spc * d + weight * (p * c),
            spt * d + weight * (p * t), sct * d + weight * (c * t),
        ]  # fmt: skip

    def expected(self, prompt: int, completion: int) -> float:
        """The fitted time of a reply of ``completion`` tokens to a prompt of ``prompt`` tokens."""
        w, sp, sc, st, spp, scc, spc, spt, sct = self._s
        if w <= 0:
            return 0.0
        mp, mc, mt = sp / w, sc / w, st / w
        vpp, vcc, vpc = spp / w - mp * mp, scc / w - mc * mc, spc / w - mp * mc
        cpt, cct = spt / w - mp * mt, sct / w - mc * mt
        b = c = 0.0
        det = vpp * vcc - vpc * vpc
        if vpp > 1.0 and vcc > 1.0 and det > 0.01 * vpp * vcc:
            b, c = (cpt * vcc - cct * vpc) / det, (cct * vpp - cpt * vpc) / det
        if b < 0.0 or c < 0.0 or b == c == 0.0:
            b = 0.0
            c = max(0.0, cct / vcc) if vcc > 1.0 else 0.0
        # A whole reply's fixed part is small next to its decoding: the floor is on the whole estimate.
        return max(max(0.0, mt - b * mp - c * mc) + b * prompt + c * completion, 0.1 * mt, 1e-6)
