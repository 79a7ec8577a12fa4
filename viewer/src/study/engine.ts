// Release of a rendering engine's WebGL contexts when a study view is unmounted.

import type { RenderingEngine } from '@cornerstonejs/core';

// The private fields of cornerstone3D 5.14.0 that hold an engine's offscreen render windows:
// RenderingEngine wraps a ContextPoolRenderingEngine, whose WebGLContextPool has a vtk
// offscreen render window per context (rendering.webGlContextCount, 7 by default).
interface ContextPoolEngine {
  _implementation?: {
    contextPool?: { getAllContexts(): { getOpenGLRenderWindow?(): { getCanvas?(): HTMLCanvasElement | null } }[] };
  };
}

/**
 * Destroys a rendering engine and loses its WebGL contexts at once. RenderingEngine.destroy()
 * deletes the vtk objects but leaves each context alive until garbage collection, so opening
 * study after study ran into the browser's limit of active contexts and it dropped old ones.
 */
export function destroyRenderingEngine(engine: RenderingEngine): void {
  const windows = (engine as unknown as ContextPoolEngine)._implementation?.contextPool?.getAllContexts() ?? [];
  const canvases = windows.map((window) => window.getOpenGLRenderWindow?.()?.getCanvas?.()).filter((canvas) => canvas != null);
  engine.destroy();
  for (const canvas of canvases) {
    // cornerstone warns of every lost context; this loss is intended, so the capture listener
    // stops the event before cornerstone's listener on the same canvas.
    canvas.addEventListener('webglcontextlost', (event) => event.stopImmediatePropagation(), { capture: true });
    const context = canvas.getContext('webgl2') ?? canvas.getContext('webgl');
    context?.getExtension('WEBGL_lose_context')?.loseContext();
  }
}
