"""Speaker diarization for gpt-4o-transcribe-diarize.

- pipeline: pyannote segmentation-3.0 + CAM++ embeddings + clustering (needs the `diarize` extra)
- embeddings: the CAM++ speaker-embedding network, loaded from the offline weights
- speakers: speaker turns, known-speaker matching, public labels
- turn_edges: grow turn edges over adjoining sound
- transcriber: Whisper words joined to speakers (the diarize model's engine)

Only `pipeline` and `embeddings` import torch; the rest is plain numpy.
"""
