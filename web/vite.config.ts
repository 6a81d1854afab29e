// Vite build of the Yilian web client. Element Plus components and their styles are
// imported on demand (only what a route uses lands in that route's chunk); routes are
// lazy-loaded, so the sign-in page ships a small initial bundle (bench/webclient.py).
import { fileURLToPath, URL } from 'node:url'
import vue from '@vitejs/plugin-vue'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'
import Components from 'unplugin-vue-components/vite'
import { defineConfig } from 'vite'

// `npm run dev` proxies the API to a running ./scripts/up (override with YILIAN_API).
const apiTarget = process.env.YILIAN_API ?? 'http://127.0.0.1:8080'

export default defineConfig({
  plugins: [
    vue(),
    Components({
      resolvers: [ElementPlusResolver({ importStyle: 'css' })],
      dts: false,
    }),
  ],
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  server: {
    proxy: { '/api': { target: apiTarget, changeOrigin: false } },
  },
  build: {
    manifest: true,
    target: 'es2022',
    chunkSizeWarningLimit: 600,
  },
})
