// A counter vat: its count lives in baggage, so it goes on after a restart.
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('count')) {
    baggage.init('count', 0);
  }

  return makeDefaultExo('Counter', {
    incr() {
      const count = baggage.get('count') + 1;
      baggage.set('count', count);
      return count;
    },
    read() {
      return baggage.get('count');
    },
  });
}
