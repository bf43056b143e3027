// The controls and results of zoo's pages (the page of `zoo serve` and the static page of `zoo export --format web`),
// inlined into both by zoo/serve/_page.py. Every model name, label and text is data: set with textContent, never
// parsed as HTML.

function element(tag, attributes) {
  const node = document.createElement(tag);
  Object.assign(node, attributes || {});
  return node;
}

function number(value) {
  return String(Number(value.toPrecision(4)));
}

function labelled(parent, text, control, help) {
  const label = element("label", {textContent: text + " "});
  label.appendChild(control);
  parent.appendChild(label);
  if (help) parent.appendChild(element("p", {className: "help", textContent: help}));
  return control;
}

function select(name, values) {
  const control = element("select", {name: name});
  for (const v of values) control.appendChild(element("option", {value: v, textContent: v}));
  return control;
}

// `shown(file)`: the image to preview, a Blob (default: the file itself)
function imageControl(form, input, shown) {
  const file = element("input", {type: "file", name: input.name, accept: "image/*", required: true});
  labelled(form, "Choose an image file for " + input.name + ":", file, "What happens to it: " + input.help + ".");
  const preview = element("img", {className: "preview", alt: "the chosen image", hidden: true});
  form.appendChild(preview);
  file.addEventListener("change", async () => {
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.hidden = !file.files.length;
    if (file.files.length) preview.src = URL.createObjectURL(shown ? await shown(file.files[0]) : file.files[0]);
  });
}

function tabularControls(form, input) {
  form.appendChild(element("p", {className: "note", textContent: input.note}));
  for (const column of input.columns) {
    const row = element("div", {className: "field"});
    const values = input.categories[column];
    const control = values ? select(column, values)
                           : element("input", {type: "number", step: "any", name: column, required: true});
    control.id = "field-" + Math.random().toString(36).slice(2);
    row.appendChild(element("label", {textContent: column, htmlFor: control.id}));
    row.appendChild(control);
    const range = input.ranges[column];
    const text = values ? "one of: " + values.join(", ")
                        : range ? "training range " + number(range[0]) + " to " + number(range[1]) : "a number";
    row.appendChild(element("span", {className: "range", textContent: text}));
    form.appendChild(row);
  }
}

function inputControls(form, input, shown) {
  if (input.kind === "image") {
    imageControl(form, input, shown);
  } else if (input.kind === "tabular") {
    tabularControls(form, input);
  } else if (input.kind === "series") {
    labelled(form, input.name + ": at least " + input.window + " readings of " + input.column + ", oldest first",
             element("textarea", {name: input.name, rows: 3, cols: 60, required: true}), input.help + ".");
  } else if (input.kind === "onehot") {
    labelled(form, input.name, select(input.name, input.vocabulary), input.help + ".");
  } else {
    form.appendChild(element("p", {textContent: input.name + ": no preprocessing; send tensors to /infer"}));
  }
}

function showResult(box, model, body) {
  box.replaceChildren();
  for (const prediction of body.predictions) {
    for (const [output, values] of Object.entries(prediction.outputs)) {
      box.appendChild(element("h3", {textContent: model.outputs[output] || output, title: "output " + output}));
      const list = element("ol", {className: "result"});
      for (const v of values) {
        const item = element("li");
        if (typeof v === "object") {
          item.appendChild(element("span", {className: "bar", style: "width:" + (v.probability * 10).toFixed(2) + "rem"}));
          item.appendChild(element("span", {className: "label", textContent: v.label}));
          item.appendChild(document.createTextNode(" " + v.probability.toFixed(3)));
          item.dataset.probability = v.probability;
        } else {
          item.textContent = number(v);
          item.dataset.value = v;
        }
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    for (const w of prediction.warnings) box.appendChild(element("p", {className: "warning", textContent: "warning: " + w}));
  }
}

