"""Representation: melodies as tokens (the token format and its grammar), reading scores and MIDI
into tokens, writing MIDI and MusicXML, the MIDI upload checks, corpora, keys and meters.
The lowest floor of ``model/``: it imports nothing from the floors above."""
