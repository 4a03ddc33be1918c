/* srv_chat_page.h: the chat page served at GET / (engine/server/chat_page.html,
 * embedded byte for byte by tools/embed_chat_page.sh into srv_chat_page.c). */
#ifndef SRV_CHAT_PAGE_H
#define SRV_CHAT_PAGE_H

#include <stddef.h>

extern const unsigned char srv_chat_page_html[];
extern const size_t srv_chat_page_html_len;

#endif
