// Background loading of a stack's images: a bounded number of loads at a time, nearest to
// the slice on screen first.

export type LoadTask = (index: number) => Promise<void>;

export class PrefetchQueue {
  private readonly pending = new Set<number>();
  private running = 0;
  private focus = 0;
  private stopped = false;

  /**
   * `load` loads the image at one index; its failure is the caller's to report, so the queue
   * only moves on. `maxInFlight` bounds the loads started and not yet settled.
   */
  constructor(
    count: number,
    private readonly load: LoadTask,
    private readonly maxInFlight: number,
  ) {
    for (let index = 0; index < count; index++) {
      this.pending.add(index);
    }
  }

  /** Sets the slice to load around and starts loads up to the limit. */
  start(focus: number): void {
    this.setFocus(focus);
  }

  /** Moves the focus, so the next loads to start are those nearest `focus`. */
  setFocus(focus: number): void {
    this.focus = focus;
    this.pump();
  }

  /** Marks an index loaded by someone else, such as the viewport, so it is not loaded again. */
  skip(index: number): void {
    this.pending.delete(index);
  }

  /** Starts no more loads; loads in flight still settle. */
  stop(): void {
    this.stopped = true;
    this.pending.clear();
  }

  get remaining(): number {
    return this.pending.size;
  }

  /** Returns the pending index nearest the focus, the lower one on a tie. */
  private next(): number | undefined {
    let best: number | undefined;
    for (const index of this.pending) {
      const distance = Math.abs(index - this.focus);
      if (best === undefined || distance < Math.abs(best - this.focus) || (distance === Math.abs(best - this.focus) && index < best)) {
        best = index;
      }
    }
    return best;
  }

  private pump(): void {
    while (!this.stopped && this.running < this.maxInFlight) {
      const index = this.next();
      if (index === undefined) {
        return;
      }
      this.pending.delete(index);
      this.running++;
      this.load(index)
        .catch(() => undefined)
        .finally(() => {
          this.running--;
          this.pump();
        });
    }
  }
}
