"""Engines: audio decoding and speech models. Nothing here knows about HTTP.

The server talks to this package through the typed objects in `engines.types`,
the errors in `engines.errors`, `engines.audio.decode_audio` and
`engines.registry.ModelRegistry`.
"""
