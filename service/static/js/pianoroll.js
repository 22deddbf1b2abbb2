// The piano roll: one SVG <rect class="note"> per note (x = time in beats, y = pitch),
// bar and beat lines from the meter, black-key rows shaded. The <svg> carries
// data-note-count, and highlight(index) marks the note that is playing. A click on a bar calls
// onBarClick(bar, extend) (1-based); selectBars(first, last) shades the chosen bars.
// A harmonized melody's chords ([{chord, startBeat, endBeat}]) are written in a lane above the
// notes (<text class="chord">); its accompaniment is not drawn: the roll is the melody's.

const SVG = "http://www.w3.org/2000/svg";
const NAMES = ["C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B"];
export const pitchName = (p) => `${NAMES[p % 12]}${Math.floor(p / 12) - 1}`;

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

export class PianoRoll {
  constructor(container) {
    this.container = container;
    this.rects = [];
  }

  // notes: [{pitch, startBeat, endBeat}], meter "n/d", chords: [{chord, startBeat, endBeat}]
  render(notes, meter = "4/4", endBeat = 0, chords = []) {
    this.container.replaceChildren();
    const [num, den] = meter.split("/").map(Number);
    const beatsPerBar = (num * 4) / den; // in quarter notes
    const lastBeat = Math.max(beatsPerBar, endBeat - 1e-6, ...notes.map((n) => n.endBeat));
    const totalBeats = Math.ceil(lastBeat / beatsPerBar) * beatsPerBar;
    const pitches = notes.map((n) => n.pitch);
    const low = Math.min(...pitches, 60) - 2, high = Math.max(...pitches, 72) + 2;
    const beatW = 24, rowH = 8, left = 34;
    const top = chords.length ? 12 : 0;   // the chord lane
    const width = left + totalBeats * beatW, height = top + (high - low + 1) * rowH;
    const y = (p) => top + (high - p) * rowH;

    const svg = el("svg", {
      viewBox: `0 0 ${width} ${height}`,
      class: "pianoroll",
      role: "img",
      "aria-label": `Piano roll of ${notes.length} notes`,
      "data-note-count": notes.length,
    });
    // Scales with the page, but never so small that notes cannot be told apart (it scrolls).
    svg.style.minWidth = `${Math.round(width * 0.6)}px`;

    for (let p = low; p <= high; p++) {
      const black = [1, 3, 6, 8, 10].includes(p % 12);
      el("rect", { x: left, y: y(p), width: width - left, height: rowH, class: black ? "row black" : "row" }, svg);
      if (p % 12 === 0) {
        const label = el("text", { x: 2, y: y(p) + rowH - 1, class: "label" }, svg);
        label.textContent = pitchName(p);
      }
    }
    for (const c of chords) {
      if (c.startBeat >= totalBeats) continue;
      el("rect", { x: left + c.startBeat * beatW, y: 0, width: Math.max(1, (Math.min(c.endBeat, totalBeats) - c.startBeat) * beatW - 1),
                   height: top - 1, class: "chord-span" }, svg);
      const label = el("text", { x: left + c.startBeat * beatW + 2, y: top - 3, class: "chord" }, svg);
      label.textContent = c.chord;
    }
    for (let b = 0; b <= totalBeats; b++) {
      const bar = Math.abs(b / beatsPerBar - Math.round(b / beatsPerBar)) < 1e-6;
      el("line", { x1: left + b * beatW, x2: left + b * beatW, y1: 0, y2: height, class: bar ? "bar" : "beat" }, svg);
    }
    this.rects = notes.map((n, i) => {
      const rect = el("rect", {
        x: left + n.startBeat * beatW,
        y: y(n.pitch) + 0.5,
        width: Math.max(2, (n.endBeat - n.startBeat) * beatW - 1),
        height: rowH - 1,
        rx: 2,
        class: "note",
        "data-index": i,
        "data-pitch": n.pitch,
      }, svg);
      el("title", {}, rect).textContent = `${pitchName(n.pitch)}, beat ${+(n.startBeat + 1).toFixed(2)}`;
      return rect;
    });
    this.selection = el("rect", { x: 0, y: 0, width: 0, height, class: "bar-selection", visibility: "hidden" }, svg);
    svg.addEventListener("click", (event) => {
      const point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const x = point.matrixTransform(svg.getScreenCTM().inverse()).x;
      if (x < left || !this.onBarClick) return;
      this.onBarClick(Math.floor((x - left) / (beatsPerBar * beatW)) + 1, event.shiftKey);
    });
    this.geometry = { left, barW: beatsPerBar * beatW, bars: Math.round(totalBeats / beatsPerBar) };
    this.container.appendChild(svg);
    this.svg = svg;
    this.current = -1;
  }

  // Shade bars first..last (1-based, inclusive); null hides the shading.
  selectBars(first, last) {
    if (!this.svg) return;
    const { left, barW } = this.geometry;
    if (first === null) { this.selection.setAttribute("visibility", "hidden"); return; }
    this.selection.setAttribute("x", left + (first - 1) * barW);
    this.selection.setAttribute("width", (last - first + 1) * barW);
    this.selection.setAttribute("visibility", "visible");
  }

  highlight(index) {
    if (this.current >= 0) this.rects[this.current]?.classList.remove("playing");
    this.current = index;
    if (index >= 0) this.rects[index]?.classList.add("playing");
  }
}
