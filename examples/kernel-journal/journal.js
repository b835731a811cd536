// A journal vat: it stamps each note with the time (the `Date` global its
// config grants), writes it to the cluster's `journal` file channel, and
// can wait before answering (`setTimeout`). The IO service is kept in
// baggage, so the vat goes on writing after a restart.
export function buildRootObject(vatPowers, parameters, baggage) {
  const io = () => baggage.get('io');

  return makeDefaultExo('Journal', {
    bootstrap(vats, services) {
      if (!baggage.has('io')) {
        baggage.init('io', services.io);
      }
    },
    async note(text) {
      const line = `${new Date().toISOString()} ${text}`;
      await E(io()).write('journal', line);
      return new TextEncoder().encode(line).length;
    },
    later(milliseconds, text) {
      return new Promise(resolve => setTimeout(() => resolve(text), milliseconds));
    },
  });
}
