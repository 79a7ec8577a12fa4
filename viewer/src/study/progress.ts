// Load progress of a stack: the overlay status line and the settled state.

export interface LoadProgress {
  count: number;
  loaded: number;
  failed: number;
}

/** Tells whether every image has settled, loaded or failed. */
export function allSettled(progress: LoadProgress): boolean {
  return progress.loaded + progress.failed >= progress.count;
}

/** Returns the overlay status: "Loaded 3 of 10, 2 failed" while loading, "2 failed" after, or "". */
export function describeProgress(progress: LoadProgress): string {
  const parts = progress.loaded < progress.count && !allSettled(progress) ? [`Loaded ${progress.loaded} of ${progress.count}`] : [];
  if (progress.failed > 0) {
    parts.push(`${progress.failed} failed`);
  }
  return parts.join(', ');
}

/** Returns the message shown once every image settled and some failed, or undefined when none failed. */
export function describeFailures(progress: LoadProgress, firstReason: string | undefined): string | undefined {
  if (progress.failed === 0 || !allSettled(progress)) {
    return undefined;
  }
  const reason = firstReason ? `: ${firstReason}` : '.';
  if (progress.failed === progress.count) {
    return `None of the ${progress.count} images could be loaded${reason}`;
  }
  return `${progress.failed} of ${progress.count} images could not be loaded${reason}`;
}
