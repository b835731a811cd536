// The bootstrap vat. At first launch its `bootstrap` is handed the roots of
// the other vats and the requested services; it keeps them in baggage,
// which survives restarts (this program runs again then, but `bootstrap`
// does not).
export function buildRootObject(vatPowers, parameters, baggage) {
  if (!baggage.has('bootstrapCount')) {
    baggage.init('bootstrapCount', 0);
  }

  return makeDefaultExo('Main', {
    async bootstrap(vats, services) {
      baggage.set('bootstrapCount', baggage.get('bootstrapCount') + 1);
      baggage.init('counter', vats.counter);
      baggage.init('logger', services.logger);
      const now = await E(services.timer).now();
      await E(services.logger).log(`${parameters.name} bootstrapped at ${now}`);
      return `${parameters.name} is ready`;
    },
    // Counts in the counter vat.
    incr() {
      return E(baggage.get('counter')).incr();
    },
    // How many times `bootstrap` ran: 1, also after restarts.
    bootstrapCount() {
      return baggage.get('bootstrapCount');
    },
  });
}
