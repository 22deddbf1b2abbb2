// The composing page's Harmony fields and a melody's chords: what the fields add to a melody
// request (chords, chord_tones, harmonize: service/schemas.py), and the chords of a finished melody,
// read from its JSON file (model/generation/accompaniment.py's chords_json: symbol, start and end in
// quarter-note beats).

// The request fields from the fields' values. Empty chords are left out (no progression); chord_tones
// goes with chords only, where it means something; harmonize only when it is asked for.
export function harmonyFields({ chords = "", chordTones = "", harmonize = false } = {}) {
  const body = {};
  const progression = chords.trim();
  if (progression) {
    body.chords = progression;
    if (chordTones) body.chord_tones = chordTones;
  }
  if (harmonize) body.harmonize = true;
  return body;
}

// The Harmony fields of the form: read them, and show Chord tones only while there are chords.
export function bindHarmonyFields(form) {
  const chords = form.elements.chords, tones = form.elements.chord_tones, harmonize = form.elements.harmonize;
  const tonesField = document.getElementById("chord_tones-field");
  const showTones = () => { tonesField.hidden = chords.value.trim() === ""; };
  chords.addEventListener("input", showTones);
  showTones();
  return {
    read: () => harmonyFields({ chords: chords.value, chordTones: tones.value, harmonize: harmonize.checked }),
  };
}

// A melody's chords, [{chord, startBeat, endBeat}], from its JSON file; [] when it has none.
export async function fetchChords(jsonUrl) {
  const response = await fetch(jsonUrl);
  if (!response.ok) throw new Error(`the melody's chords are gone (HTTP ${response.status}); it may have expired`);
  const doc = await response.json();
  return (doc.chords || []).map((c) => ({ chord: c.chord, startBeat: c.start_beats, endBeat: c.end_beats }));
}
