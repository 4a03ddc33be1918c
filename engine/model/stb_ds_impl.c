/* stb_ds_impl.c: the one definition of stb_ds (libstb-dev's <stb/stb_ds.h>) for the
 * whole engine. Any module may `#include <stb/stb_ds.h>` for its dynamic arrays and
 * hash maps; none may define STB_DS_IMPLEMENTATION anywhere else (duplicate symbols). */
#define STB_DS_IMPLEMENTATION
#include <stb/stb_ds.h>
