// The measurements panel: lengths, angles and rectangle ROIs of the active series.

import { eventTarget } from '@cornerstonejs/core';
import { Enums as ToolEnums, annotation } from '@cornerstonejs/tools';
import type { DicomJson } from '../contract';
import { element, formatNumber } from './dom';
import { type Measurement, describeMeasurement, measurementOf } from './measurement';

const EVENTS = [
  ToolEnums.Events.ANNOTATION_COMPLETED,
  ToolEnums.Events.ANNOTATION_MODIFIED,
  ToolEnums.Events.ANNOTATION_REMOVED,
];

export class MeasurementsPanel {
  readonly root = element('aside', { class: 'measurements', 'data-testid': 'measurements', 'aria-label': 'Measurements' });
  private readonly list = element('ul', { class: 'measurement-list' });
  private readonly listener = () => this.scheduleRefresh();
  private pending = false;

  /**
   * `imageIds` returns the images of the active series, `instanceOf` an image's instance,
   * `render` redraws the viewport after a deletion and `goTo` shows an image.
   */
  constructor(
    private readonly imageIds: () => readonly string[],
    private readonly instanceOf: (imageId: string) => DicomJson | undefined,
    private readonly render: () => void,
    private readonly goTo: (index: number) => void,
  ) {
    this.root.append(element('h2', {}, ['Measurements']), this.list);
    for (const name of EVENTS) {
      eventTarget.addEventListener(name, this.listener);
    }
    this.refresh();
  }

  /** Rebuilds the list at the next frame, once for a burst of tool events. */
  scheduleRefresh(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.refresh();
    });
  }

  refresh(): void {
    const imageIds = this.imageIds();
    const items = annotation.state
      .getAllAnnotations()
      .map((item) => measurementOf(item as Parameters<typeof measurementOf>[0], this.instanceOf))
      .filter((item): item is Measurement => item !== undefined && imageIds.includes(item.imageId));
    const rows = items.map((item) => this.row(item, imageIds.indexOf(item.imageId)));
    if (rows.length === 0) {
      rows.push(element('li', { class: 'measurement-empty' }, ['No measurements. Choose Length, Angle or ROI and drag on the image.']));
    }
    this.list.replaceChildren(...rows);
  }

  private row(item: Measurement, index: number): HTMLLIElement {
    const attributes: Record<string, string> = {
      class: 'measurement',
      'data-testid': 'measurement',
      'data-kind': item.kind,
      'data-uid': item.uid,
      'data-value': item.value === undefined ? '' : formatNumber(item.value, 3),
    };
    if (item.kind === 'rectangle-roi') {
      attributes['data-std'] = item.std === undefined ? '' : formatNumber(item.std, 3);
      attributes['data-unit'] = item.unit;
    }
    const label = element('button', { type: 'button', class: 'measurement-label', title: 'Show this image' }, [describeMeasurement(item, index + 1)]);
    label.addEventListener('click', () => this.goTo(index));
    const remove = element('button', { type: 'button', class: 'measurement-delete', 'data-testid': 'measurement-delete', 'aria-label': 'Delete measurement' }, ['×']);
    remove.addEventListener('click', () => {
      annotation.state.removeAnnotation(item.uid);
      this.render();
      this.refresh();
    });
    return element('li', attributes, [label, remove]);
  }

  /** Stops listening and removes the annotations of `imageIds`. */
  dispose(imageIds: readonly string[]): void {
    for (const name of EVENTS) {
      eventTarget.removeEventListener(name, this.listener);
    }
    for (const item of annotation.state.getAllAnnotations()) {
      const imageId = item.metadata?.referencedImageId;
      if (item.annotationUID && imageId && imageIds.includes(imageId)) {
        annotation.state.removeAnnotation(item.annotationUID);
      }
    }
  }
}
