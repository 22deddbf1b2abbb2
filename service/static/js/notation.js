// Notation: builds ABC text from a melody's notes (16th-note grid, spelled in the key)
// and renders it with the vendored abcjs (its renderer only; it never loads a soundfont).
// highlight(index) marks the written note(s) of melody note `index`, ties included.
// Chord symbols ([{chord, startBeat}]) are written as ABC chord symbols ("G") on the note or rest
// where each chord starts (a note sounding across a chord change is split there and tied), which
// abcjs draws above the staff.

// Semitones from a mode's tonic up to its relative major's tonic.
const MODE_TO_MAJOR = {
  major: 0, ionian: 0, minor: 3, aeolian: 3, natural_minor: 3, harmonic_minor: 3, melodic_minor: 3,
  dorian: 10, phrygian: 8, lydian: 7, mixolydian: 5, locrian: 1,
  pentatonic: 0, pentatonic_major: 0, pentatonic_minor: 3, blues: 3, chromatic: 0,
};
const ABC_MODE = { major: "", ionian: "", minor: "m", aeolian: "m", natural_minor: "m", harmonic_minor: "m",
  melodic_minor: "m", dorian: " dor", phrygian: " phr", lydian: " lyd", mixolydian: " mix", locrian: " loc",
  pentatonic: "", pentatonic_major: "", pentatonic_minor: "m", blues: "m", chromatic: "" };
const FIFTHS_OF_MAJOR = { 0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 1: -5, 8: -4, 3: -3, 10: -2, 5: -1 };
const LETTERS = ["C", "D", "E", "F", "G", "A", "B"];
const LETTER_PC = { C: 0, D: 2, E: 4, F: 5, G: 7, A: 9, B: 11 };
const PC_OF_NAME = (name) => {
  const m = /^([A-Ga-g])([#♯b♭]?)/.exec(name || "");
  if (!m) return null;
  const alt = { "#": 1, "♯": 1, b: -1, "♭": -1 }[m[2]] ?? 0;
  return (LETTER_PC[m[1].toUpperCase()] + alt + 12) % 12;
};

// The key signature: fifths (-7..7) and each letter's alteration under it.
function signature(fifths) {
  const alter = Object.fromEntries(LETTERS.map((l) => [l, 0]));
  for (const l of "FCGDAEB".slice(0, Math.max(0, fifths))) alter[l] = 1;
  for (const l of "BEADGCF".slice(0, Math.max(0, -fifths))) alter[l] = -1;
  return alter;
}

// key: a tonic name ("D", "Eb", "F#"), scale: a mode name; falls back to the MIDI key signature.
export function keyFor(key, scale, midiKey) {
  let tonicPc = PC_OF_NAME(key), mode = (scale || "major").toLowerCase().replace(/[\s-]/g, "_");
  if (tonicPc === null && midiKey) {
    tonicPc = PC_OF_NAME(midiKey.tonic);
    mode = midiKey.minor ? "minor" : "major";
  }
  if (tonicPc === null) return { fifths: 0, abc: "C" };
  if (!(mode in MODE_TO_MAJOR)) mode = "major";
  const majorPc = (tonicPc + MODE_TO_MAJOR[mode]) % 12;
  let fifths = FIFTHS_OF_MAJOR[majorPc];
  if (fifths === 6 && /b|♭/.test(key || "")) fifths = -6; // Gb rather than F#
  const alter = signature(fifths);
  const letter = LETTERS.find((l) => (LETTER_PC[l] + alter[l] + 12) % 12 === tonicPc) || "C";
  const tonic = letter + (alter[letter] === 1 ? "#" : alter[letter] === -1 ? "b" : "");
  return { fifths, abc: tonic + ABC_MODE[mode] };
}

// Spells a MIDI pitch in the key: [letter, alteration, octave of the letter's natural note].
function spell(pitch, alter, fifths) {
  const pc = pitch % 12;
  let letter = LETTERS.find((l) => (LETTER_PC[l] + alter[l] + 12) % 12 === pc);
  let alt = letter ? alter[letter] : 0;
  if (!letter) {
    letter = LETTERS.find((l) => LETTER_PC[l] === pc);
    alt = 0;
  }
  if (!letter) {
    alt = fifths >= 0 ? 1 : -1;
    letter = LETTERS.find((l) => (LETTER_PC[l] + alt + 12) % 12 === pc);
  }
  return [letter, alt, Math.floor((pitch - alt) / 12)];
}

function abcPitch(letter, octave) {
  const o = octave - 5; // MIDI octave 5 (middle C = 60) is ABC's upper-case octave
  return o >= 1 ? letter.toLowerCase() + "'".repeat(o - 1) : letter + ",".repeat(-o);
}

const LENGTHS = [16, 12, 8, 6, 4, 3, 2, 1]; // written lengths in 16ths (dotted ones included)
function splitLength(n) {
  const parts = [];
  while (n > 0) {
    const l = LENGTHS.find((x) => x <= n);
    parts.push(l);
    n -= l;
  }
  return parts;
}

// notes: [{pitch, startBeat, endBeat}] -> {abc, written: melody index of each written note head}
export function melodyToAbc(notes, { meter = "4/4", qpm = 120, key = null, scale = null, midiKey = null, endBeat = 0,
                                     chords = [] } = {}) {
  const [num, den] = meter.split("/").map(Number);
  const barLen = (num * 16) / den;
  const group = den === 8 && num % 3 === 0 ? 6 : 16 / den; // beam by dotted quarter in 6/8, 9/8, 12/8
  const k = keyFor(key, scale, midiKey);
  const alter = signature(k.fifths);

  // Events on the 16th grid, monophonic: a later note cuts the one before it.
  const q = (beat) => Math.round(beat * 4);
  const events = [];
  notes.forEach((n, i) => {
    const start = q(n.startBeat), end = q(n.endBeat);
    const prev = events[events.length - 1];
    if (prev && prev.end > start) prev.end = start;
    if (end > start) events.push({ start, end, pitch: n.pitch, index: i });
  });
  const clean = events.filter((e) => e.end > e.start);
  const last = Math.max(0, q(endBeat) - 0.5, ...clean.map((e) => e.end));
  const total = Math.max(barLen, Math.ceil(last / barLen) * barLen);
  const timeline = [];
  let t = 0;
  for (const e of clean) {
    if (e.start > t) timeline.push({ start: t, end: e.start, pitch: null });
    timeline.push(e);
    t = e.end;
  }
  if (t < total) timeline.push({ start: t, end: total, pitch: null });
  // Where each chord starts on the grid (a later chord at one position wins), and the next change after s.
  const chordAt = new Map(chords.map((c) => [q(c.startBeat), c.chord]).filter(([at]) => at >= 0 && at < total));
  const changes = [...chordAt.keys()].sort((a, b) => a - b);
  const nextChange = (s) => changes.find((at) => at > s) ?? Infinity;

  let body = "", barState = { ...alter }, written = [];
  // Busy bars need room: fewer of them on a line when the melody moves in short notes.
  const notesPerBar = clean.length / (total / barLen);
  const barsPerLine = notesPerBar > 10 ? 2 : notesPerBar > 6 ? 3 : barLen <= 12 ? 6 : 4;
  for (const e of timeline) {
    let s = e.start;
    while (s < e.end) {
      const barEnd = (Math.floor(s / barLen) + 1) * barLen;
      const pieceEnd = Math.min(e.end, barEnd, nextChange(s));
      const parts = splitLength(pieceEnd - s);
      for (let i = 0; i < parts.length; i++) {
        if (s % barLen !== 0 && s % group === 0) body += " ";
        if (chordAt.has(s)) body += `"${chordAt.get(s)}"`;
        if (e.pitch === null) {
          body += `z${parts[i]}`;
        } else {
          const [letter, alt, octave] = spell(e.pitch, alter, k.fifths);
          const id = letter + octave;
          const current = id in barState ? barState[id] : alter[letter];
          const acc = alt === current ? "" : { 1: "^", "-1": "_", 0: "=" }[alt];
          barState[id] = alt;
          body += `${acc}${abcPitch(letter, octave)}${parts[i]}`;
          written.push(e.index);
          if (s + parts[i] < e.end) body += "-"; // tied into the next piece
        }
        s += parts[i];
      }
      if (s % barLen === 0) {
        const bar = s / barLen;
        body += s >= total ? " |]" : bar % barsPerLine === 0 ? " |\n" : " | ";
        barState = {};
      }
    }
  }
  // Bass clef when most of the melody lies below the treble staff.
  const pitches = clean.map((e) => e.pitch).sort((a, b) => a - b);
  const clef = pitches.length && pitches[Math.floor(pitches.length / 2)] < 55 ? " clef=bass" : "";
  const abc = `X:1\nM:${meter}\nL:1/16\nQ:1/4=${Math.round(qpm)}\nK:${k.abc}${clef}\n${body}\n`;
  return { abc, written };
}

export class Notation {
  constructor(container) {
    this.container = container;
    this.heads = [];
  }

  render(notes, options) {
    const { abc, written } = melodyToAbc(notes, options);
    this.abc = abc;
    this.container.replaceChildren();
    if (!window.ABCJS) {
      this.container.textContent = "Notation is unavailable (abcjs did not load).";
      return;
    }
    window.ABCJS.renderAbc(this.container, abc, { responsive: "resize", add_classes: true, paddingtop: 0, paddingbottom: 0 });
    // abcjs draws note heads in the order they are written: pair them with melody indices.
    const heads = [...this.container.querySelectorAll(".abcjs-note")];
    this.byMelodyIndex = new Map();
    heads.forEach((h, i) => {
      const m = written[i];
      if (!this.byMelodyIndex.has(m)) this.byMelodyIndex.set(m, []);
      this.byMelodyIndex.get(m).push(h);
    });
    this.container.dataset.writtenNotes = written.length;
    this.container.dataset.drawnNotes = heads.length;
    this.current = -1;
  }

  highlight(index) {
    for (const h of this.byMelodyIndex?.get(this.current) || []) h.classList.remove("playing");
    this.current = index;
    for (const h of this.byMelodyIndex?.get(index) || []) h.classList.add("playing");
  }
}
