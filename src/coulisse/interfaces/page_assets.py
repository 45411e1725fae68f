"""The explain page's inline CSS and JavaScript (the attention heat map, drawn on a canvas from the data
embedded in the page), shared with the studio: nothing fetched from anywhere, so the page opens offline."""

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1080px;color:#111;
padding:0 16px}
h1{font-size:22px}h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin:22px 0 6px}
.attributed{font-size:18px;line-height:2;white-space:pre-wrap}
.word{padding:2px 1px;border-radius:3px;cursor:help}.word.against,.legend .against{text-decoration:underline}
.hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.truncated{color:#666}.truncated td{color:#666;background:#f4f4f4}
.legend{display:flex;align-items:center;gap:8px;font-size:13px;color:#444}
.ramp{display:inline-block;width:220px;height:12px;border:1px solid #ccc;
background:linear-gradient(90deg,rgb(178,24,43),#fff,rgb(33,102,172))}
.meta,.note{font-size:13px;color:#444}.note{background:#fff7e0;padding:4px 8px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
svg text{font-size:12px;fill:#222}.scores rect{fill:#6a51a3}.norms rect{fill:#888}.components rect{fill:#4292c6}
.tagged,.context{font-size:17px;line-height:2;white-space:pre-wrap}.entity{padding:1px 3px;border-radius:3px}
.entity sup{font-size:10px;margin-left:3px;color:#333}.answer-span{background:#c7e9c0;padding:1px 2px}
.answer{font-size:17px}.canvas-wrap{overflow:auto;max-height:720px}
.scale{display:flex;align-items:center;gap:.4em;font-size:13px;margin:.3em 0}
.scale-bar{display:inline-block;width:10em;height:.8em;border:1px solid #888;
background:linear-gradient(to right,rgb(255,255,255),rgb(33,102,172))}
.table-box{max-width:100%;overflow-x:auto;margin:4px 0}svg{max-width:100%;height:auto}
body{overflow-wrap:break-word}.word-scores summary{cursor:pointer;font-size:13px;margin:6px 0}
"""

SCRIPT = """
(function () {
  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function setup(box) {
    var data = JSON.parse(box.querySelector('.attention-data').textContent);
    var probs = bytes(data.probs), n = data.n, h = data.heads;
    var words = bytes(data.rollout), rollout = new Float32Array(n * n);  // 16-bit, little-endian
    for (var r = 0; r < n * n; r++) rollout[r] = (words[2 * r] | (words[2 * r + 1] << 8)) / 65535;
    var layer = box.querySelector('.layer'), head = box.querySelector('.head');
    var canvas = box.querySelector('.heatmap'), ctx = canvas.getContext('2d');
    var cell = Math.max(6, Math.min(22, Math.floor(640 / n))), margin = 96, current = null;
    function matrix() {
      var m = new Float32Array(n * n);
      if (layer.value === 'rollout') {
        for (var i = 0; i < n * n; i++) m[i] = rollout[i];
        return m;
      }
      var l = +layer.value, heads = head.value === 'mean' ? [...Array(h).keys()] : [+head.value];
      heads.forEach(function (k) {
        var base = (l * h + k) * n * n;
        for (var i = 0; i < n * n; i++) m[i] += probs[base + i] / 255 / heads.length;
      });
      return m;
    }
    function draw() {
      head.disabled = layer.value === 'rollout';
      var m = matrix(), top = 0, off = layer.value === 'rollout';  // rollout: scaled off the diagonal
      for (var i = 0; i < m.length; i++) if (!off || i % (n + 1) !== 0) top = Math.max(top, m[i]);
      canvas.width = margin + n * cell; canvas.height = margin + n * cell;
      ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
        var t = top > 0 ? Math.min(1, m[q * n + k] / top) : 0;
        ctx.fillStyle = 'rgb(' + Math.round(255 - t * 222) + ',' + Math.round(255 - t * 153) + ','
          + Math.round(255 - t * 83) + ')';
        ctx.fillRect(margin + k * cell, margin + q * cell, cell, cell);
      }
      // labels stay readable (10 px at least): past ~60 tokens every second one, or third...; the hover says all
      var size = Math.max(10, Math.min(12, cell)), every = Math.ceil(size / cell);
      ctx.fillStyle = '#222'; ctx.font = size + 'px sans-serif';
      data.tokens.forEach(function (tok, i) {
        if (i % every) return;
        var label = tok.length > 12 ? tok.slice(0, 11) + '…' : tok;
        ctx.textAlign = 'right'; ctx.fillText(label, margin - 4, margin + i * cell + cell * 0.8);
        ctx.save(); ctx.translate(margin + i * cell + cell * 0.8, margin - 4); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = 'left'; ctx.fillText(label, 0, 0); ctx.restore();
      });
      box.querySelector('.scale-top').textContent = top.toFixed(3) + (off
        ? ' (the largest off the diagonal; the diagonal, above it, is the darkest)' : ' (the largest value here)');
      current = m;
      fill(m);
    }
    function fill(m) {  // the table alternative: rows are queries, columns keys, as on the canvas
      var table = box.querySelector('table.attention-values');
      var names = data.tokens.map(function (tok, i) { return (i + 1) + ' ' + tok; });
      function cell(tag, text, scope) {
        var c = document.createElement(tag);
        c.textContent = text;
        if (scope) c.scope = scope;
        return c;
      }
      table.querySelector('caption').textContent = 'Attention, ' + layer.options[layer.selectedIndex].text
        + (layer.value === 'rollout' ? '' : ', ' + head.options[head.selectedIndex].text)
        + ': row = query token, column = key token it attends to';
      var top = document.createElement('tr');
      top.appendChild(cell('th', 'query \u2193 key \u2192', 'col'));
      names.forEach(function (name) { top.appendChild(cell('th', name, 'col')); });
      table.tHead.replaceChildren(top);
      var rows = [];
      for (var q = 0; q < n; q++) {
        var row = document.createElement('tr');
        row.appendChild(cell('th', names[q], 'row'));
        for (var k = 0; k < n; k++) {
          var value = cell('td', m[q * n + k].toFixed(3));
          value.className = 'num';
          row.appendChild(value);
        }
        rows.push(row);
      }
      table.tBodies[0].replaceChildren.apply(table.tBodies[0], rows);
    }
    canvas.addEventListener('mousemove', function (ev) {
      var r = canvas.getBoundingClientRect();
      var k = Math.floor((ev.clientX - r.left - margin) / cell), q = Math.floor((ev.clientY - r.top - margin) / cell);
      canvas.title = (q >= 0 && k >= 0 && q < n && k < n && current)
        ? data.tokens[q] + ' → ' + data.tokens[k] + ': ' + current[q * n + k].toFixed(3) : '';
    });
    layer.addEventListener('change', draw); head.addEventListener('change', draw);
    draw();
  }
  document.querySelectorAll('.attention').forEach(setup);
})();
"""
