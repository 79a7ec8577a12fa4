// A stand-in for the study view: it lists the series of the study, so the app shell can be
// tried before the real view lands.

import type { MountStudyView } from '../contract';

export const mountStudyView: MountStudyView = (container, client, study, options = {}) => {
  const root = document.createElement('section');
  root.dataset.testid = 'study-view';
  root.dataset.state = 'loading';
  root.className = 'panel';
  const back = document.createElement('button');
  back.type = 'button';
  back.dataset.testid = 'study-back';
  back.textContent = 'Back to the worklist';
  back.addEventListener('click', () => options.onClose?.());
  const text = document.createElement('p');
  text.textContent = `Study ${study.studyUid}`;
  root.append(back, text);
  container.replaceChildren(root);

  const controller = new AbortController();
  const prefix = study.site ? `/sites/${encodeURIComponent(study.site)}` : '';
  client
    .fetch(`${prefix}/studies/${study.studyUid}/series`, { headers: { Accept: 'application/dicom+json' }, signal: controller.signal })
    .then((response) => (response.status === 204 ? [] : response.json()))
    .then((series: unknown[]) => {
      text.textContent = `Study ${study.studyUid}: ${series.length} series`;
      root.dataset.state = 'ready';
    })
    .catch((error: unknown) => {
      if (controller.signal.aborted) return;
      text.textContent = String(error);
      root.dataset.state = 'error';
    });
  return () => controller.abort();
};
