/* The start-up workload: exits at once. */
int main(void) { return 0; }
