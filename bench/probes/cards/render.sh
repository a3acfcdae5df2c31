#!/bin/bash
# render every card face of every KDE deck (kdegames-card-data-kf5 4:22.12.3-1) at width 200
cd "${CARDS_PROBE_DIR:-bench/out/cards}/render"
deck=$1; mkdir -p raw/$deck
for s in club spade heart diamond; do for r in 1 2 3 4 5 6 7 8 9 10 jack queen king; do
  rsvg-convert -i ${r}_$s -w 200 $deck.svg -o raw/$deck/${r}_$s.png 2>/dev/null
done; done
