// A small Standard MIDI File reader: enough to show and play a melody the service made
// (or a primer the user picked). Returns the notes with times in beats and in seconds,
// plus tempo, meter and key signature. Format 0 and 1, running status, all meta events.
// A harmonized melody's accompaniment (model/generation/accompaniment.py: a track of its own on
// MIDI channel 2) comes back apart from the melody: `accompaniment`, its notes; `notes`, the rest.

function readVarLen(bytes, pos) {
  let value = 0;
  for (let i = 0; i < 4; i++) {
    const b = bytes[pos++];
    value = (value << 7) | (b & 0x7f);
    if (!(b & 0x80)) return [value, pos];
  }
  throw new Error("MIDI: variable-length number longer than 4 bytes");
}

function readChunks(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = [];
  let pos = 0;
  while (pos + 8 <= bytes.length) {
    const id = String.fromCharCode(...bytes.subarray(pos, pos + 4));
    const length = view.getUint32(pos + 4);
    chunks.push({ id, data: bytes.subarray(pos + 8, pos + 8 + length), view: new DataView(bytes.buffer, bytes.byteOffset + pos + 8, Math.min(length, bytes.length - pos - 8)) });
    pos += 8 + length;
  }
  return chunks;
}

// Every event of one track with its absolute tick.
function readTrack(data) {
  const events = [];
  let pos = 0, tick = 0, status = 0;
  while (pos < data.length) {
    let delta;
    [delta, pos] = readVarLen(data, pos);
    tick += delta;
    let b = data[pos];
    if (b & 0x80) { status = b; pos++; } // otherwise running status: reuse the last one
    if (status === 0xff) {
      const type = data[pos++];
      let len;
      [len, pos] = readVarLen(data, pos);
      events.push({ tick, meta: type, data: data.subarray(pos, pos + len) });
      pos += len;
      if (type === 0x2f) break; // end of track
    } else if (status === 0xf0 || status === 0xf7) {
      let len;
      [len, pos] = readVarLen(data, pos);
      pos += len;
    } else {
      const kind = status & 0xf0;
      const a = data[pos++];
      const twoBytes = kind !== 0xc0 && kind !== 0xd0;
      const c = twoBytes ? data[pos++] : 0;
      events.push({ tick, kind, channel: status & 0x0f, a, b: c });
    }
  }
  return events;
}

const SHARP_KEYS = ["C", "G", "D", "A", "E", "B", "F#", "C#"];
const FLAT_KEYS = ["C", "F", "Bb", "Eb", "Ab", "Db", "Gb", "Cb"];
const SHARP_MINORS = ["A", "E", "B", "F#", "C#", "G#", "D#", "A#"];
const FLAT_MINORS = ["A", "D", "G", "C", "F", "Bb", "Eb", "Ab"];

export function parseMidi(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const chunks = readChunks(bytes);
  if (!chunks.length || chunks[0].id !== "MThd") throw new Error("not a MIDI file (no MThd header)");
  const division = chunks[0].view.getUint16(4);
  if (division & 0x8000) throw new Error("MIDI files timed in SMPTE frames are not supported");
  const ticksPerBeat = division;

  const tempos = [{ tick: 0, usPerBeat: 500000 }];
  let meter = null, keySignature = null;
  const notes = [];
  let lastTick = 0; // the end of the music: the last event (an end marker or end of track)
  let track = -1;
  for (const chunk of chunks.slice(1)) {
    if (chunk.id !== "MTrk") continue;
    track++;
    const open = new Map(); // channel*128+pitch -> [startTick, velocity]
    for (const e of readTrack(chunk.data)) {
      lastTick = Math.max(lastTick, e.tick);
      if (e.meta === 0x51 && e.data.length >= 3) {
        tempos.push({ tick: e.tick, usPerBeat: (e.data[0] << 16) | (e.data[1] << 8) | e.data[2] });
      } else if (e.meta === 0x58 && !meter) {
        meter = `${e.data[0]}/${2 ** e.data[1]}`;
      } else if (e.meta === 0x59 && !keySignature) {
        const sf = (e.data[0] << 24) >> 24, minor = e.data[1] === 1;
        const names = minor ? (sf >= 0 ? SHARP_MINORS : FLAT_MINORS) : (sf >= 0 ? SHARP_KEYS : FLAT_KEYS);
        keySignature = { sharps: sf, minor, tonic: names[Math.abs(sf)] ?? "C" };
      } else if (e.kind === 0x90 && e.b > 0) {
        open.set(e.channel * 128 + e.a, [e.tick, e.b]);
      } else if (e.kind === 0x80 || (e.kind === 0x90 && e.b === 0)) {
        const key = e.channel * 128 + e.a;
        const started = open.get(key);
        if (started && e.tick > started[0]) {
          notes.push({ pitch: e.a, startTick: started[0], endTick: e.tick, velocity: started[1], channel: e.channel, track });
        }
        open.delete(key);
      }
    }
  }
  notes.sort((x, y) => x.startTick - y.startTick || x.pitch - y.pitch);

  // Ticks -> seconds through the tempo map (sorted; a later event at one tick wins).
  tempos.sort((x, y) => x.tick - y.tick);
  const segments = [];
  let seconds = 0;
  for (let i = 0; i < tempos.length; i++) {
    const t = tempos[i];
    if (segments.length) {
      const prev = segments[segments.length - 1];
      seconds = prev.seconds + ((t.tick - prev.tick) * prev.usPerBeat) / 1e6 / ticksPerBeat;
    }
    segments.push({ tick: t.tick, usPerBeat: t.usPerBeat, seconds });
  }
  const toSeconds = (tick) => {
    let s = segments[0];
    for (const seg of segments) if (seg.tick <= tick) s = seg;
    return s.seconds + ((tick - s.tick) * s.usPerBeat) / 1e6 / ticksPerBeat;
  };

  const timed = (n) => ({
    pitch: n.pitch,
    velocity: n.velocity,
    startBeat: n.startTick / ticksPerBeat,
    endBeat: n.endTick / ticksPerBeat,
    start: toSeconds(n.startTick),
    end: toSeconds(n.endTick),
  });
  const accompanied = isAccompanied(notes);
  return {
    ticksPerBeat,
    qpm: 60e6 / segments.filter((seg) => seg.tick === 0).pop().usPerBeat,
    meter: meter || "4/4",
    keySignature,
    endBeat: lastTick / ticksPerBeat,
    notes: notes.filter((n) => !accompanied || n.channel !== ACCOMPANIMENT_CHANNEL).map(timed),
    accompaniment: accompanied ? notes.filter((n) => n.channel === ACCOMPANIMENT_CHANNEL).map(timed) : [],
    accompanimentTracks: accompanied ? accompanimentTracks(notes) : [],
  };
}

const ACCOMPANIMENT_CHANNEL = 1;   // 0-based: MIDI channel 2, where the service writes the accompaniment

// A file is accompanied when it has notes on channel 2 and on another channel too: a file with
// one line only is all melody, whatever its channel.
function isAccompanied(notes) {
  return notes.some((n) => n.channel === ACCOMPANIMENT_CHANNEL) && notes.some((n) => n.channel !== ACCOMPANIMENT_CHANNEL);
}

// The tracks (indices among the MTrk chunks) whose notes are all the accompaniment's.
function accompanimentTracks(notes) {
  const tracks = new Set(notes.filter((n) => n.channel === ACCOMPANIMENT_CHANNEL).map((n) => n.track));
  for (const n of notes) if (n.channel !== ACCOMPANIMENT_CHANNEL) tracks.delete(n.track);
  return [...tracks].sort((a, b) => a - b);
}

// The file without its accompaniment's tracks (format 1: whole MTrk chunks dropped, the header's
// track count lowered), so a harmonized melody can be sent back as a primer with its melody only.
// A file without an accompaniment track comes back as it is.
export function withoutAccompaniment(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const drop = new Set(parseMidi(bytes).accompanimentTracks);
  if (!drop.size) return bytes;
  const parts = [];
  let pos = 0, track = -1, kept = 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  while (pos + 8 <= bytes.length) {
    const id = String.fromCharCode(...bytes.subarray(pos, pos + 4));
    const end = Math.min(bytes.length, pos + 8 + view.getUint32(pos + 4));
    const isTrack = id === "MTrk";
    if (isTrack) track++;
    if (!isTrack || !drop.has(track)) {
      parts.push(bytes.subarray(pos, end));
      if (isTrack) kept++;
    }
    pos = end;
  }
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  new DataView(out.buffer).setUint16(10, kept);   // MThd: format(8..9), ntracks(10..11), division
  return out;
}
