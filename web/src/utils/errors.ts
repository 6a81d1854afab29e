import { useI18n } from 'vue-i18n'
import { ApiError } from '@/api/client'

export interface ShownError {
  status: number
  code: string
  title: string // a translation of the code when we have one, else the API's message
  message: string // the API's own message
}

/** Turns any thrown value into what a page shows: status, code, and words for both. */
export function useErrorText() {
  const { t, te } = useI18n()
  return (e: unknown): ShownError => {
    const err = e instanceof ApiError ? e : new ApiError(0, 'CLIENT', (e as Error)?.message ?? String(e))
    const key = `errors.${err.code}`
    return {
      status: err.status,
      code: err.code,
      title: te(key) ? t(key) : err.message,
      message: err.message,
    }
  }
}
