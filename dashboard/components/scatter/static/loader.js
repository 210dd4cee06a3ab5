function loader_default(component) {
  const L = window.__parallaxScatterLoader || (window.__parallaxScatterLoader = {});
  const data = component.data || {};
  if (!data.bundle) return void 0;
  const url = new URL(data.bundle, window.location.origin).href;
  if (L.url !== url) {
    L.url = url;
    L.mod = import(url).catch((err) => {
      L.url = null;
      throw err;
    });
  }
  let cleanup = null;
  let gone = false;
  L.mod.then((mod) => {
    const entry = mod[data.entry || "default"];
    if (typeof entry !== "function") throw new Error(`no component "${data.entry}" in the bundle`);
    if (!gone) cleanup = entry(component);
  }).catch((err) => {
    const box = document.createElement("div");
    box.className = "parallax-scatter-error";
    box.textContent = `The map component could not be loaded: ${err && err.message || err}`;
    component.parentElement.replaceChildren(box);
  });
  return () => {
    gone = true;
    if (cleanup) cleanup();
  };
}
export {
  loader_default as default
};
