"""Audio modality (Audio-MAE): Kaldi filterbank front end, spectrogram tokenizer, local decoder, datasets and the
spectrogram reconstruction figure. See ``docs/audio.md``."""

from maezoo.audio import data, models, visualize  # noqa: F401  (registers datasets, builders, decoder, visualiser)
from maezoo.audio.decoder import LocalDecoder
from maezoo.audio.frontend import FbankConfig, batched_fbank, kaldi_fbank, load_audio
from maezoo.audio.tokenizer import AudioTokenizer
from maezoo.audio.visualize import save_spectrograms

__all__ = ["AudioTokenizer", "FbankConfig", "LocalDecoder", "batched_fbank", "kaldi_fbank", "load_audio",
           "save_spectrograms"]
