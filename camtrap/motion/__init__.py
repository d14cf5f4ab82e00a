"""Pure per-frame logic: motion boxes, square regions and the crops cut from them."""
