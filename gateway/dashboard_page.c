/* dashboard_page.c - gateway/dashboard/index.html, embedded at build time.
 *
 * The assembler's .incbin copies the file into .rodata as it is, so the
 * page is edited as plain HTML and no generated source is kept.  The path
 * is relative to the top of the tree, where make runs the compiler; the
 * Makefile lists the page as a prerequisite of this object so that editing
 * it rebuilds the gateway. */
#include "dashboard.h"

#include "logpipe/banned.h"

#ifndef GW_DASHBOARD_HTML
#define GW_DASHBOARD_HTML "gateway/dashboard/index.html"
#endif

__asm__(".pushsection .rodata\n"
	".global gw__dashboard_html\n"
	".type gw__dashboard_html, @object\n"
	".balign 16\n"
	"gw__dashboard_html:\n"
	".incbin \"" GW_DASHBOARD_HTML "\"\n"
	".global gw__dashboard_html_end\n"
	".type gw__dashboard_html_end, @object\n"
	"gw__dashboard_html_end:\n"
	".byte 0\n"
	".popsection\n");
