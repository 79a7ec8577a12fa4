// Replaces xmlbuilder2 in the browser build. vtk.js imports it for its XML readers and
// writers, which cornerstone3D imports for meshes and the orientation marker, and which the
// viewer never runs. xmlbuilder2 4.0 needs Node's "events" and "url" modules, so bundling it
// breaks the page at load ("Class extends value undefined").

export function create(): never {
  throw new Error('xmlbuilder2 is not bundled in the viewer: vtk.js XML readers and writers are unavailable');
}
