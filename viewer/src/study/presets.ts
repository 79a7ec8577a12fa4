// Window presets for CT, in Hounsfield units.

export interface WindowPreset {
  // The data-testid suffix: "preset-" + id.
  id: string;
  label: string;
  width: number;
  center: number;
}

// Bone uses W 2000 L 300, one of the two common bone windows.
export const CT_WINDOW_PRESETS: readonly WindowPreset[] = [
  { id: 'ct-soft-tissue', label: 'Soft tissue', width: 400, center: 40 },
  { id: 'ct-lung', label: 'Lung', width: 1500, center: -600 },
  { id: 'ct-bone', label: 'Bone', width: 2000, center: 300 },
  { id: 'ct-brain', label: 'Brain', width: 80, center: 40 },
];

/**
 * Returns the values that a linear window maps to the darkest and brightest output: the
 * LINEAR function of PS3.3 C.11.2.1.2.1, which cornerstone3D also applies to the
 * WindowCenter and WindowWidth of an image.
 */
export function windowToRange(width: number, center: number): { lower: number; upper: number } {
  return { lower: center - 0.5 - (width - 1) / 2, upper: center - 0.5 + (width - 1) / 2 };
}

/** Returns the window width and center of a value range, the inverse of windowToRange. */
export function rangeToWindow(lower: number, upper: number): { width: number; center: number } {
  return { width: upper - lower + 1, center: (lower + upper + 1) / 2 };
}
